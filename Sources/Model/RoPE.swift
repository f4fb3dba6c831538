import Foundation

/// Rotary position embedding tables, rotate-half convention (transformers' Llama/Qwen code):
/// dimension i < D/2 pairs with i + D/2 and turns by position * theta^(-2i/D).
/// Angles are computed in Double so long positions keep fp32 accuracy.
package final class RoPE {
    package let headDim: Int
    package let theta: Double
    package private(set) var positions = 0
    private(set) var cosTable: [Float] = []   // (positions, D/2)
    private(set) var sinTable: [Float] = []

    package init(headDim: Int, theta: Double) {
        self.headDim = headDim
        self.theta = theta
    }

    /// Makes sure the tables cover positions 0..<n.
    package func reserve(_ n: Int) {
        guard n > positions else { return }
        let half = headDim / 2
        let newCount = max(n, positions * 2, 256)
        cosTable.reserveCapacity(newCount * half)
        sinTable.reserveCapacity(newCount * half)
        // transformers computes inv_freq in fp32 and the angle as fp32 product; matching that
        // keeps logits bit-close for long prompts.
        let invFreq: [Float] = (0..<half).map { Float(1.0 / pow(theta, Double(2 * $0) / Double(headDim))) }
        for p in positions..<newCount {
            for i in 0..<half {
                let angle = Float(p) * invFreq[i]
                cosTable.append(Float(cos(Double(angle))))
                sinTable.append(Float(sin(Double(angle))))
            }
        }
        positions = newCount
    }

    /// Pointers to the cos and sin rows of position `p` (call `reserve` first).
    @inline(__always)
    func row(_ p: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> Void) {
        let half = headDim / 2
        cosTable.withUnsafeBufferPointer { c in
            sinTable.withUnsafeBufferPointer { s in body(c.baseAddress! + p * half, s.baseAddress! + p * half) }
        }
    }
}
