import Foundation
import RL
import TestSupport
import Train
import XCTest

/// GRPO's loss, its gradient and the group advantages against PyTorch autograd written as TRL
/// computes them (scripts/reference/grpo.py, fixture `grpo-loss.json`): 2 prompts x 3 completions
/// of different lengths, ratios on both sides of the clip, every loss aggregation without and
/// with a k3 KL term, and k1 and k2. rqat's side is the flat positions with per-token
/// coefficients from `LossAggregation.coefficients`. Tolerances: loss within 1e-5 relative,
/// every gradient entry within 1e-5 of the case's max |gradient|, advantages within 1e-9.
final class GRPOLossReferenceTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let aggregation: String
            let kl: String?
            let beta: Double
            let loss: Double
            let clipped: Int
            let gradient: [Double]
        }
        let rows: Int, length: Int, vocab: Int, group: Int, budget: Int
        let temperature: Double, clip_low: Double, clip_high: Double
        let lengths: [Int]
        let rewards: [Double], logits: [Double], targets: [Int], old_logprobs: [Double], ref_logprobs: [Double]
        let advantages: [Double]
        let cases: [Case]
    }

    func testLossGradientAndAdvantagesMatchTorch() throws {
        let ref = try TestPaths.loadJSON(Reference.self, fixture: "grpo-loss.json")
        let (b, l, v) = (ref.rows, ref.length, ref.vocab)
        let n = b * l

        let (advantages, zeroGroups) = Advantages.compute(rewards: ref.rewards, groupSize: ref.group, scaling: .group)
        XCTAssertEqual(zeroGroups, 0)
        for (a, e) in zip(advantages, ref.advantages) { XCTAssertEqual(a, e, accuracy: 1e-9) }

        var mask = [Float](repeating: 0, count: n)
        for (row, count) in ref.lengths.enumerated() { for t in 0..<count { mask[row * l + t] = 1 } }
        let perToken = (0..<n).map { Float(advantages[$0 / l]) }
        XCTAssertEqual(Set(ref.cases.map(\.aggregation)), Set(LossAggregation.allCases.map(\.rawValue)))
        XCTAssertEqual(ref.cases.count, 8)

        for c in ref.cases {
            let aggregation = try XCTUnwrap(LossAggregation(rawValue: c.aggregation))
            let perRow = aggregation.coefficients(lengths: ref.lengths, budget: ref.budget)
            let coefficients = (0..<n).map { Float(perRow[$0 / l]) }
            var options = GRPOLoss.Options()
            options.temperature = Float(ref.temperature)
            options.clipLow = ref.clip_low
            options.clipHigh = ref.clip_high
            if let kl = c.kl {
                options.klEstimator = try XCTUnwrap(KLEstimator(rawValue: kl))
                options.klCoefficient = c.beta
            }
            let logits = ref.logits.map { Float($0) }
            var gradient = [Float](repeating: .nan, count: n * v), logProbs = [Float](repeating: .nan, count: n)
            let (loss, stats) = logits.withUnsafeBufferPointer { z in
                gradient.withUnsafeMutableBufferPointer { g in
                    logProbs.withUnsafeMutableBufferPointer { lp in
                        GRPOLoss.forwardBackward(logits: z.baseAddress!, vocab: v, targets: ref.targets, mask: mask,
                                                 coefficients: coefficients, advantages: perToken,
                                                 oldLogProbs: ref.old_logprobs.map { Float($0) },
                                                 referenceLogProbs: ref.ref_logprobs.map { Float($0) },
                                                 options: options, logProbs: lp.baseAddress!, gradient: g.baseAddress!)
                    }
                }
            }
            let name = "\(c.aggregation) kl=\(c.kl ?? "none")"
            XCTAssertEqual(loss, c.loss, accuracy: 1e-5 * abs(c.loss), name)
            XCTAssertEqual(stats.tokens, ref.lengths.reduce(0, +), name)
            XCTAssertEqual(stats.clipped, c.clipped, name)
            XCTAssertGreaterThan(c.clipped, 0, "the fixture clips some tokens")
            let scale = c.gradient.map(abs).max()!
            for (i, (got, want)) in zip(gradient, c.gradient).enumerated() {
                XCTAssertEqual(Double(got), want, accuracy: 1e-5 * scale, "\(name): gradient[\(i)]")
            }
            for t in 0..<n where mask[t] == 0 {
                XCTAssertEqual(logProbs[t], 0, "\(name): unmasked position \(t)")
            }
        }
    }

    /// Every completion of a group right, or every one wrong: no advantage, and counted.
    func testGroupsWithEqualRewardsHaveNoAdvantage() {
        let (a, zero) = Advantages.compute(rewards: [1, 1, 1, 0, 1, 0, 0, 0, 0], groupSize: 3, scaling: .group)
        XCTAssertEqual(zero, 2)
        XCTAssertEqual(Array(a[0..<3]), [0, 0, 0])
        XCTAssertEqual(Array(a[6..<9]), [0, 0, 0])
        XCTAssertGreaterThan(a[4], 0)
        let (none, _) = Advantages.compute(rewards: [1, 0, 0, 0], groupSize: 2, scaling: .none)
        XCTAssertEqual(none, [0.5, -0.5, 0, 0])
    }
}
