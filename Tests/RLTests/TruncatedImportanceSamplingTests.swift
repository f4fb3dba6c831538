import Foundation
import RL
import Tensors
import XCTest

/// `--tis-cap`: each token's surrogate, value and gradient, is weighted by
/// min(pi_old / pi_sampler, cap), a constant of the sample.
final class TruncatedImportanceSamplingTests: XCTestCase {
    func testEachTokensSurrogateIsWeightedByItsCappedRatio() {
        let n = 6, v = 10
        var rng = SeededRNG(seed: 7)
        let logits = (0..<n * v).map { _ in Float((rng.uniform() - 0.5) * 6) }
        let targets = (0..<n).map { $0 % v }
        let mask: [Float] = [1, 1, 1, 1, 1, 0]
        let advantages: [Float] = [1, -1, 0.5, 2, -0.7, 1]
        let coefficients = [Float](repeating: 0.2, count: n)
        var options = GRPOLoss.Options()
        options.temperature = 0.8
        let current = GRPOLoss.logProbs(logits: logits, vocab: v, targets: targets, mask: mask, temperature: 0.8)
        // The sampler's log-probs: below, equal to and above the policy's.
        let shifts: [Float] = [-1.0, 0, 0.5, -0.1, -3, 0]
        let behaviour = zip(current, shifts).map { $0 + $1 }

        func run(_ cap: Double?) -> (loss: Double, gradient: [Float], stats: GRPOLoss.Stats) {
            var o = options
            o.tisCap = cap
            var gradient = [Float](repeating: 0, count: n * v), lp = [Float](repeating: 0, count: n)
            let (loss, stats) = gradient.withUnsafeMutableBufferPointer { g in
                lp.withUnsafeMutableBufferPointer { lp in
                    GRPOLoss.forwardBackward(logits: logits, vocab: v, targets: targets, mask: mask, coefficients: coefficients,
                                             advantages: advantages, oldLogProbs: nil, referenceLogProbs: nil,
                                             behaviourLogProbs: behaviour, options: o, logProbs: lp.baseAddress!, gradient: g.baseAddress!)
                }
            }
            return (loss, gradient, stats)
        }
        let plain = run(nil), cap = 2.0, weighted = run(cap)
        var expectedLoss = 0.0
        for r in 0..<n where mask[r] > 0 {
            let w = min(exp(Double(-shifts[r])), cap)
            expectedLoss += w * Double(coefficients[r]) * -Double(advantages[r])
            for j in 0..<v {
                XCTAssertEqual(Double(weighted.gradient[r * v + j]), w * Double(plain.gradient[r * v + j]), accuracy: 1e-6,
                               "row \(r), logit \(j)")
            }
        }
        XCTAssertEqual(weighted.loss, expectedLoss, accuracy: 1e-6, "ratio 1: the loss is -sum c w A")
        XCTAssertEqual(weighted.stats.tisTruncated, 2, "rows 0 (e^1) and 4 (e^3) exceed the cap")
        XCTAssertEqual(weighted.stats.tisWeight, 2 + 1 + exp(-0.5) + exp(0.1) + 2, accuracy: 1e-5)
        XCTAssertEqual(plain.stats.tisWeight, 0)
    }
}
