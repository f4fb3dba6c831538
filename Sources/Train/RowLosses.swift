import Foundation
import Tensors

/// What the per-token losses (cross-entropy, distillation) share: rows of (N, V) logits run in
/// parallel; a row whose weight is 0 contributes nothing and gets a zero gradient row; the
/// weighted row losses are summed in Double and divided by `normalizer`.
package enum RowLosses {
    /// `row(r, w, gradientRow)` returns row r's weighted loss and, when `gradientRow` is given,
    /// writes that row of the gradient. Called only for rows with `w > 0`.
    static func sum(rows n: Int, vocab v: Int, weights: [Float], normalizer: Double,
                    gradient: UnsafeMutablePointer<Float>?,
                    _ row: (_ r: Int, _ w: Float, _ gradientRow: UnsafeMutablePointer<Float>?) -> Double) -> Double {
        var rowLoss = [Double](repeating: 0, count: n)
        rowLoss.withUnsafeMutableBufferPointer { losses in
            Threads.parallelFor(n) { rows in
                for r in rows {
                    let w = weights[r]
                    guard w > 0 else {
                        if let g = gradient { (g + r * v).update(repeating: 0, count: v) }
                        continue
                    }
                    losses[r] = row(r, w, gradient.map { $0 + r * v })
                }
            }
        }
        return rowLoss.reduce(0, +) / normalizer
    }

    /// Max and log-sum-exp of x / T over one row (stable: max subtracted, sum in fp32).
    @inline(__always)
    package static func logSumExp(_ x: UnsafePointer<Float>, _ v: Int, invT: Float = 1) -> (max: Float, logZ: Float) {
        var m = -Float.infinity
        for j in 0..<v { m = max(m, x[j] * invT) }
        var s: Float = 0
        for j in 0..<v { s += expf(x[j] * invT - m) }
        return (m, m + logf(s))
    }
}
