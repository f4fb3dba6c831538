import CKernels
import Foundation
import Tensors

/// Cross-entropy of next-token predictions with a per-position loss mask.
public enum CrossEntropy {
    /// Loss summed over positions whose `weights[i] > 0` (each weighted), divided by `normalizer`
    /// (the number of predicted tokens of the whole optimizer step, so micro-batches add up to
    /// one mean). With `gradient`, writes dL/dlogits row by row: (softmax - onehot) * w / normalizer.
    ///
    /// logits: (N, V); targets: N ids (ignored where the weight is 0); weights: N.
    /// The log-softmax is computed stably (max subtracted, sums in fp32 per row, total in Double).
    /// `gradient` may be `logits` itself: each row is read completely before it is overwritten.
    public static func forwardBackward(logits: UnsafePointer<Float>, vocab v: Int, targets: [Int],
                                       weights: [Float], normalizer: Double,
                                       gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = targets.count
        precondition(weights.count == n, "one weight per target")
        var rowLoss = [Double](repeating: 0, count: n)
        rowLoss.withUnsafeMutableBufferPointer { losses in
            Threads.parallelFor(n) { rows in
                for r in rows {
                    let z = logits + r * v
                    let w = weights[r]
                    guard w > 0 else {
                        if let g = gradient { (g + r * v).update(repeating: 0, count: v) }
                        continue
                    }
                    let t = targets[r]
                    precondition(t >= 0 && t < v, "target id \(t) outside the vocabulary (\(v))")
                    var m = -Float.infinity
                    for j in 0..<v { m = max(m, z[j]) }
                    var s: Float = 0
                    for j in 0..<v { s += expf(z[j] - m) }
                    let logZ = m + logf(s)
                    losses[r] = Double(w) * Double(logZ - z[t])
                    if let g = gradient {
                        let gr = g + r * v
                        let scale = Float(Double(w) / normalizer)
                        for j in 0..<v { gr[j] = expf(z[j] - logZ) * scale }
                        gr[t] -= scale
                    }
                }
            }
        }
        return rowLoss.reduce(0, +) / normalizer
    }
}
