import CKernels
import Foundation
import Tensors

/// Cross-entropy of next-token predictions with a per-position loss mask.
package enum CrossEntropy {
    /// Loss summed over positions whose `weights[i] > 0` (each weighted), divided by `normalizer`
    /// (the number of predicted tokens of the whole optimizer step, so micro-batches add up to
    /// one mean). With `gradient`, writes dL/dlogits row by row: (softmax - onehot) * w / normalizer.
    ///
    /// logits: (N, V); targets: N ids (ignored where the weight is 0); weights: N.
    /// The log-softmax is computed stably (max subtracted, sums in fp32 per row, total in Double).
    /// `gradient` may be `logits` itself: each row is read completely before it is overwritten.
    package static func forwardBackward(logits: UnsafePointer<Float>, vocab v: Int, targets: [Int],
                                       weights: [Float], normalizer: Double,
                                       gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = targets.count
        precondition(weights.count == n, "one weight per target")
        return RowLosses.sum(rows: n, vocab: v, weights: weights, normalizer: normalizer, gradient: gradient) { r, w, gr in
            let z = logits + r * v
            let t = targets[r]
            precondition(t >= 0 && t < v, "target id \(t) outside the vocabulary (\(v))")
            let (_, logZ) = RowLosses.logSumExp(z, v)
            let loss = Double(w) * Double(logZ - z[t])
            if let gr {
                let scale = Float(Double(w) / normalizer)
                for j in 0..<v { gr[j] = expf(z[j] - logZ) * scale }
                gr[t] -= scale
            }
            return loss
        }
    }
}
