import Cluster
import Foundation
@testable import Bench
import Tensors
import Train
import XCTest

/// The KD-bias maths of `rqat bench wire` against cases worked out by hand: a teacher with
/// p = (0.5, 0.3, 0.2) and a student with q = (0.2, 0.3, 0.5) over a 3-token vocabulary.
final class KDBiasTests: XCTestCase {
    let p: [Double] = [0.5, 0.3, 0.2], q: [Double] = [0.2, 0.3, 0.5]
    let options = KDLoss.Options(temperature: 1, scaleByTemperatureSquared: false)

    /// Logits whose softmax is `probabilities`, as a (1, V) tensor.
    func logits(_ probabilities: [Double]) -> Tensor {
        let t = Tensor(shape: [1, probabilities.count])
        for (j, x) in probabilities.enumerated() { t.ptr[j] = Float(log(x)) }
        return t
    }

    func cosine(_ a: [Double], _ b: [Double]) -> Double {
        var dot = 0.0, aa = 0.0, bb = 0.0
        for (x, y) in zip(a, b) { dot += x * y; aa += x * x; bb += y * y }
        return dot / (aa * bb).squareRoot()
    }

    var exactKL: Double { 0.5 * log(0.5 / 0.2) + 0.3 * log(1) + 0.2 * log(0.2 / 0.5) }
    var teacherEntropy: Double { -(0.5 * log(0.5) + 0.3 * log(0.3) + 0.2 * log(0.2)) }

    func testEntropyOfSoftmaxAtATemperature() {
        let uniform: [Float] = [3, 3, 3, 3]
        XCTAssertEqual(KDBias.entropy(uniform, 4, invT: 1), log(4), accuracy: 1e-12)
        let t = logits(p)
        XCTAssertEqual(KDBias.entropy(t.ptr, 3, invT: 1), teacherEntropy, accuracy: 1e-6)
        // At T = 2, logits twice as large give the same distribution.
        let doubled = Tensor(shape: [1, 3])
        for j in 0..<3 { doubled.ptr[j] = 2 * t.ptr[j] }
        XCTAssertEqual(KDBias.entropy(doubled.ptr, 3, invT: 0.5), teacherEntropy, accuracy: 1e-6)
    }

    func testReferenceIsTheForwardKLAndItsGradient() {
        let exact = KDBias.reference(student: logits(q), teacher: logits(p), vocab: 3, rows: 1, options: options)
        XCTAssertEqual(exact.kl[0], exactKL, accuracy: 1e-6)
        XCTAssertEqual(exact.entropy[0], teacherEntropy, accuracy: 1e-6)
        // d KL / d s = q - p.
        for j in 0..<3 { XCTAssertEqual(Double(exact.gradient.ptr[j]), q[j] - p[j], accuracy: 1e-6) }
    }

    func bias(of signal: TeacherSignal) -> KDBias {
        let student = logits(q)
        let exact = KDBias.reference(student: student, teacher: logits(p), vocab: 3, rows: 1, options: options)
        var acc = KDBias()
        acc.add(signal: signal, student: student, vocab: 3, rows: 1, reference: exact.kl, entropy: exact.entropy,
                referenceGradient: exact.gradient, options: options)
        return acc
    }

    func testFullLogitsHaveNoBias() {
        let t = logits(p)
        let s = bias(of: .full(logits: Array(UnsafeBufferPointer(start: t.ptr, count: 3)), vocab: 3)).summary
        XCTAssertEqual(s.positions, 1)
        XCTAssertEqual(s.estimate, exactKL, accuracy: 1e-6)
        XCTAssertEqual(s.bias, 0, accuracy: 1e-6)
        XCTAssertEqual(s.gradCosine, 1, accuracy: 1e-6)
        XCTAssertEqual(s.gradCosineRowMean, 1, accuracy: 1e-6)
        XCTAssertEqual(s.tailMass, 0)
    }

    /// Top-1 + tail: token 0 and one bucket {1, 2} with teacher mass 0.5 and student mass 0.8.
    func testTopKIsTheKLOfTheBucketedDistributions() {
        let acc = bias(of: .topK(k: 1, ids: [0], logProbs: [Float(log(0.5))], tailMass: [0.5]))
        let s = acc.summary
        let bucketed = 0.5 * log(0.5 / 0.2) + 0.5 * log(0.5 / 0.8)
        XCTAssertEqual(s.estimate, bucketed, accuracy: 1e-6)
        XCTAssertEqual(s.reference, exactKL, accuracy: 1e-6)
        XCTAssertEqual(s.biasNats, bucketed - exactKL, accuracy: 1e-6)
        XCTAssertEqual(s.bias, (bucketed - exactKL) / exactKL, accuracy: 1e-5)
        XCTAssertLessThan(s.bias, 0, "merging tokens into a bucket can only lose KL")
        XCTAssertEqual(s.tailMass, 0.5, accuracy: 1e-7)
        // Gradient: q0 - p0 on the top-1 token; q_j (1 - p_tail / q_tail) outside it.
        let g = [q[0] - p[0], q[1] * (1 - 0.5 / 0.8), q[2] * (1 - 0.5 / 0.8)], f = zip(q, p).map { $0 - $1 }
        XCTAssertEqual(s.gradCosine, cosine(g, f), accuracy: 1e-5)
        XCTAssertEqual(s.gradCosineRowMean, cosine(g, f), accuracy: 1e-5)
    }

    /// Four draws: token 0 three times, token 2 once. The estimate is the cross-entropy on the
    /// draws less the teacher's entropy.
    func testSampledEstimateSubtractsTheTeacherEntropy() {
        let s = bias(of: .sampled(draws: 2, ids: [0, 2], counts: [3, 1])).summary
        let crossEntropy = -(0.75 * log(0.2) + 0.25 * log(0.5))
        XCTAssertEqual(s.estimate, crossEntropy - teacherEntropy, accuracy: 1e-6)
        XCTAssertEqual(s.distinctIds, 2)
        // Gradient q - c/m = (0.2 - 0.75, 0.3, 0.5 - 0.25).
        let g = [0.2 - 0.75, 0.3, 0.5 - 0.25], f = zip(q, p).map { $0 - $1 }
        XCTAssertEqual(s.gradCosine, cosine(g, f), accuracy: 1e-5)
    }

    /// Two rows with estimates 1.0, 2.0 against 1.5, 2.0: differences -0.5 and 0.
    func testSummaryStatistics() {
        var acc = KDBias()
        acc.estimate = 3
        acc.reference = 3.5
        acc.diffs = [-0.5, 0]
        acc.diffSquares = 0.25
        acc.dot = 2
        acc.normSquared = 4
        acc.referenceNormSquared = 4
        acc.rowCosineSum = 1.5
        acc.rows = 2
        let s = acc.summary
        XCTAssertEqual(s.positions, 2)
        XCTAssertEqual(s.estimate, 1.5)
        XCTAssertEqual(s.reference, 1.75)
        XCTAssertEqual(s.biasNats, -0.25)
        XCTAssertEqual(s.bias, -0.5 / 3.5, accuracy: 1e-15)
        // Sample sd of (-0.5, 0) is sqrt(0.125); the SE of the sum over positions, relative to Σ KL.
        XCTAssertEqual(s.biasSE, 0.125.squareRoot() * 2.0.squareRoot() / 3.5, accuracy: 1e-15)
        XCTAssertEqual(s.gradCosine, 0.5)
        XCTAssertEqual(s.gradCosineRowMean, 0.75)
    }

    /// Reverse KL and JSD(1/2): the top-1 + tail estimate is the divergence of the bucketed
    /// distributions (teacher (0.5, 0.5), student (0.2, 0.8)), the reference the full one.
    func testReverseKLAndJSDBiasAreTheBucketedDivergences() {
        func kl(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * log($1.0 / $1.1) } }
        func jsd(_ a: [Double], _ b: [Double]) -> Double {
            let m = zip(a, b).map { ($0 + $1) / 2 }
            return kl(a, m) / 2 + kl(b, m) / 2
        }
        let pb = [0.5, 0.5], qb = [0.2, 0.8]
        for (divergence, full, bucketed) in [(KDDivergence.reverseKL, kl(q, p), kl(qb, pb)),
                                             (.jsd(beta: 0.5), jsd(p, q), jsd(pb, qb))] {
            let opts = KDLoss.Options(temperature: 1, scaleByTemperatureSquared: false, divergence: divergence)
            let student = logits(q)
            let exact = KDBias.reference(student: student, teacher: logits(p), vocab: 3, rows: 1, options: opts)
            XCTAssertEqual(exact.kl[0], full, accuracy: 1e-6, "\(divergence)")
            var acc = KDBias()
            acc.add(signal: .topK(k: 1, ids: [0], logProbs: [Float(log(0.5))], tailMass: [0.5]), student: student, vocab: 3,
                    rows: 1, reference: exact.kl, entropy: exact.entropy, referenceGradient: exact.gradient, options: opts)
            let s = acc.summary
            XCTAssertEqual(s.estimate, bucketed, accuracy: 1e-6, "\(divergence)")
            XCTAssertEqual(s.bias, (bucketed - full) / full, accuracy: 1e-5, "\(divergence)")
            XCTAssertLessThan(s.bias, 0, "\(divergence): bucketing loses divergence")
        }
    }

    func testRowOfASignal() {
        XCTAssertEqual(KDBias.row(1, of: .full(logits: [1, 2, 3, 4, 5, 6], vocab: 3)), .full(logits: [4, 5, 6], vocab: 3))
        XCTAssertEqual(KDBias.row(1, of: .topK(k: 2, ids: [0, 1, 2, 0], logProbs: [-1, -2, -3, -4], tailMass: [0.1, 0.2])),
                       .topK(k: 2, ids: [2, 0], logProbs: [-3, -4], tailMass: [0.2]))
        XCTAssertEqual(KDBias.row(0, of: .sampled(draws: 2, ids: [5, 6, 7, 8], counts: [1, 1, 2, 0])),
                       .sampled(draws: 2, ids: [5, 6], counts: [1, 1]))
    }
}
