import Foundation
import Tensors

/// The batch shape and helpers the KD loss tests share (forward KL and the other divergences
/// are checked on the same batch): n rows of v logits.
protocol KDBatch {
    var n: Int { get }
    var v: Int { get }
}

extension KDBatch {
    func randomLogits(seed: UInt64, std: Float = 2) -> [Float] {
        var rng = SeededRNG(seed: seed)
        return (0..<(n * v)).map { _ in rng.normal() * std }
    }

    static func logSoftmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let lz = m + log(x.reduce(0) { $0 + exp($1 - m) })
        return x.map { $0 - lz }
    }
}
