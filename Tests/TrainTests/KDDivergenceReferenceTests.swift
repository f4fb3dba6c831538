import Foundation
import XCTest
import TestSupport
import Train

/// Reverse KL and JSD(beta) of `KDLoss` against PyTorch autograd (scripts/reference/kd_divergences.py,
/// fixture `kd-divergences.json`): the batch of `KDReferenceTests` (N = 6, V = 64, T = 2, a masked
/// row and a 0.5 row, normalizer 5.5, top-8 + tail), every divergence on full logits and on
/// top-k + tail, with and without the T^2 scaling. Tolerances as in `KDReferenceTests`: loss
/// within 1e-5 relative, every gradient entry within 1e-5 of the case's max |gradient|.
final class KDDivergenceReferenceTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let divergence: String
            let beta: Double?
            let encoding: String
            let scale_by_t2: Bool
            let loss: Double
            let gradient: [Double]
        }
        let n: Int, vocab: Int, k: Int
        let temperature: Double, normalizer: Double
        let weights: [Double], student: [Double], teacher: [Double]
        let topk_ids: [Int], topk_logprobs: [Double], tail: [Double]
        let cases: [Case]
    }

    func testReverseKLAndJSDMatchTorch() throws {
        let ref = try TestPaths.loadJSON(Reference.self, fixture: "kd-divergences.json")
        let v = ref.vocab
        let student = ref.student.map { Float($0) }, teacher = ref.teacher.map { Float($0) }
        let weights = ref.weights.map { Float($0) }
        let ids = ref.topk_ids.map { Int32($0) }, logProbs = ref.topk_logprobs.map { Float($0) }
        let tail = ref.tail.map { Float($0) }
        XCTAssertEqual(Set(ref.cases.map { "\($0.divergence) \($0.beta ?? 0)" }), ["rkl 0.0", "jsd 0.5", "jsd 0.9"])
        XCTAssertEqual(ref.cases.count, 12)

        for c in ref.cases {
            let divergence: KDDivergence = c.divergence == "rkl" ? .reverseKL : .jsd(beta: Float(c.beta!))
            let options = KDLoss.Options(temperature: Float(ref.temperature), scaleByTemperatureSquared: c.scale_by_t2,
                                         divergence: divergence)
            var g = [Float](repeating: .nan, count: student.count)
            let loss: Double
            switch c.encoding {
            case "full":
                loss = KDLoss.fullLogits(student: student, vocab: v, teacher: teacher, weights: weights,
                                         normalizer: ref.normalizer, options: options, gradient: &g)
            case "topk":
                loss = KDLoss.topK(student: student, vocab: v, ids: ids, logProbs: logProbs, k: ref.k, tailMass: tail,
                                   weights: weights, normalizer: ref.normalizer, options: options, gradient: &g)
            default:
                return XCTFail("unknown encoding \(c.encoding)")
            }
            let label = "\(c.divergence) beta \(c.beta.map { "\($0)" } ?? "-") \(c.encoding) scaleByT2=\(c.scale_by_t2)"
            let lossRel = abs(loss - c.loss) / abs(c.loss)
            XCTAssertLessThanOrEqual(lossRel, 1e-5, "\(label): loss \(loss) vs torch \(c.loss)")
            let gMax = c.gradient.map(abs).max()!
            XCTAssertGreaterThan(gMax, 0, label)
            var worst = 0.0
            for (a, b) in zip(g, c.gradient) { worst = max(worst, abs(Double(a) - b)) }
            XCTAssertLessThanOrEqual(worst, 1e-5 * gMax, "\(label): worst |grad diff| \(worst) of max \(gMax)")
            print(String(format: "KDDivergenceReference %@: loss %.6f rel diff %.3e, grad diff %.3e of max|grad|",
                         label, loss, lossRel, worst / gMax))
        }
    }
}
