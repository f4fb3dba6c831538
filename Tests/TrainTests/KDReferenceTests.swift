import Foundation
import XCTest
import TestSupport
import Train

/// `KDLoss` against PyTorch autograd (scripts/make-reference.py, group `kd`, fixture
/// `kd-loss.json`): one batch of N = 6 rows, V = 64, T = 2, weights with a masked row and a 0.5
/// row, normalizer 5.5, for the three teacher encodings with and without the T^2 scaling. The
/// teacher top-k ids / log-probs / tail and the sampled draws come from the fixture (not
/// recomputed here), so both sides evaluate the same function of the same inputs.
///
/// Tolerances: loss within 1e-5 relative; every gradient entry within 1e-5 * max|reference
/// gradient| of that case. The reference is float64 on the float32 inputs; rqat computes in
/// float32 (with Double accumulation of the loss), so the expected differences are ~1e-7 relative.
final class KDReferenceTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let encoding: String
            let scale_by_t2: Bool
            let loss: Double
            let gradient: [Double]
        }
        let n: Int
        let vocab: Int
        let temperature: Double
        let normalizer: Double
        let k: Int
        let m: Int
        let weights: [Double]
        let student: [Double]
        let teacher: [Double]
        let topk_ids: [Int]
        let topk_logprobs: [Double]
        let tail: [Double]
        let draws: [[[Int]]]
        let cases: [Case]
    }

    static let lossRelTol = 1e-5
    static let gradRelTol = 1e-5

    /// The fixture with its inputs converted to the types `KDLoss` takes. The float32 inputs are
    /// stored as the float64 repr of their exact float32 values, so the conversions are exact.
    struct Inputs {
        let ref: Reference
        let student: [Float], teacher: [Float], weights: [Float]
        let ids: [Int32], logProbs: [Float], tail: [Float]
        let draws: [[(id: Int, count: Int)]]
        var v: Int { ref.vocab }

        init() throws {
            ref = try TestPaths.loadJSON(Reference.self, fixture: "kd-loss.json")
            student = ref.student.map { Float($0) }
            teacher = ref.teacher.map { Float($0) }
            weights = ref.weights.map { Float($0) }
            ids = ref.topk_ids.map { Int32($0) }
            logProbs = ref.topk_logprobs.map { Float($0) }
            tail = ref.tail.map { Float($0) }
            draws = ref.draws.map { row in row.map { (id: $0[0], count: $0[1]) } }
        }

        func options(scaled: Bool) -> KDLoss.Options {
            KDLoss.Options(temperature: Float(ref.temperature), scaleByTemperatureSquared: scaled)
        }

        /// Runs one encoding with `gradient` either a separate buffer or the student buffer itself.
        func run(_ encoding: String, scaled: Bool, inPlace: Bool) -> (loss: Double, gradient: [Float]) {
            let opts = options(scaled: scaled)
            var buf = inPlace ? student : [Float](repeating: .nan, count: student.count)
            let loss: Double = student.withUnsafeBufferPointer { sp in
                teacher.withUnsafeBufferPointer { tp in
                    buf.withUnsafeMutableBufferPointer { bp in
                        let g = bp.baseAddress!
                        let s = inPlace ? UnsafePointer(g) : sp.baseAddress!
                        switch encoding {
                        case "full":
                            return KDLoss.fullLogits(student: s, vocab: v, teacher: tp.baseAddress!, weights: weights,
                                                     normalizer: ref.normalizer, options: opts, gradient: g)
                        case "topk":
                            return KDLoss.topK(student: s, vocab: v, ids: ids, logProbs: logProbs, k: ref.k,
                                               tailMass: tail, weights: weights, normalizer: ref.normalizer,
                                               options: opts, gradient: g)
                        case "sampled":
                            return KDLoss.sampled(student: s, vocab: v, draws: draws, weights: weights,
                                                  normalizer: ref.normalizer, options: opts, gradient: g)
                        default:
                            fatalError("unknown encoding \(encoding)")
                        }
                    }
                }
            }
            return (loss, buf)
        }
    }

    func check(_ encoding: String) throws {
        let inputs = try Inputs()
        let ref = inputs.ref
        XCTAssertEqual(inputs.student.count, ref.n * ref.vocab)
        XCTAssertEqual(inputs.ids.count, ref.n * ref.k)
        XCTAssertEqual(inputs.draws.map { $0.reduce(0) { $0 + $1.count } }, [Int](repeating: ref.m, count: ref.n))
        let cases = ref.cases.filter { $0.encoding == encoding }
        XCTAssertEqual(Set(cases.map(\.scale_by_t2)), [true, false], "\(encoding): both scalings in the fixture")

        for c in cases {
            let label = "\(encoding) scaleByT2=\(c.scale_by_t2)"
            let (loss, g) = inputs.run(encoding, scaled: c.scale_by_t2, inPlace: false)
            XCTAssertEqual(g.count, c.gradient.count, label)

            let lossRel = abs(loss - c.loss) / abs(c.loss)
            XCTAssertLessThanOrEqual(lossRel, Self.lossRelTol,
                                     "\(label): loss \(loss) vs torch \(c.loss) (rel \(lossRel))")

            let gMax = c.gradient.map(abs).max()!
            XCTAssertGreaterThan(gMax, 0, label)
            var worst = 0.0, at = 0
            for i in 0..<min(g.count, c.gradient.count) where abs(Double(g[i]) - c.gradient[i]) > worst {
                worst = abs(Double(g[i]) - c.gradient[i]); at = i
            }
            XCTAssertLessThanOrEqual(worst, Self.gradRelTol * gMax,
                                     "\(label): worst |grad diff| \(worst) at \(at) (\(g[at]) vs \(c.gradient[at])), max|grad| \(gMax)")
            // The masked row (weight 0) has an exactly zero gradient.
            for r in 0..<ref.n where ref.weights[r] == 0 {
                XCTAssertTrue(g[(r * ref.vocab)..<((r + 1) * ref.vocab)].allSatisfy { $0 == 0 }, "\(label): row \(r)")
            }
            print(String(format: "KDReference %@: loss rel diff %.3e, max |grad diff| %.3e (%.3e of max|grad| %.4e)",
                         label, lossRel, worst, worst / gMax, gMax))

            // In place (gradient == student) gives exactly the separate-buffer result.
            let (lossIn, gIn) = inputs.run(encoding, scaled: c.scale_by_t2, inPlace: true)
            XCTAssertEqual(lossIn, loss, "\(label): in-place loss")
            XCTAssertEqual(gIn, g, "\(label): in-place gradient")
        }
    }

    func testFullLogitsMatchesTorch() throws { try check("full") }
    func testTopKMatchesTorch() throws { try check("topk") }
    func testSampledMatchesTorch() throws { try check("sampled") }
}
