import Foundation
import XCTest
import Tensors
import Train

/// Reverse KL and JSD(beta) (`KDLoss` with `options.divergence`), on full logits and top-k +
/// tail, against direct Double computations and central finite differences of those.
final class KDDivergenceTests: XCTestCase, KDBatch {
    let n = 4, v = 9
    let weights: [Float] = [1, 0, 0.5, 2]
    let normalizer = 3.5
    let T: Float = 2
    let divergences: [KDDivergence] = [.reverseKL, .jsd(beta: 0.5), .jsd(beta: 0.9)]

    // MARK: - Double references


    /// The divergence of two distributions over the same buckets (p need not sum to 1).
    static func divergence(_ d: KDDivergence, p: [Double], q: [Double]) -> Double {
        func kl(_ a: [Double], _ b: [Double]) -> Double {
            zip(a, b).reduce(0) { $0 + ($1.0 > 0 ? $1.0 * log($1.0 / $1.1) : 0) }
        }
        switch d {
        case .forwardKL: return kl(p, q)
        case .reverseKL: return kl(q, p)
        case .jsd(let beta32):
            let beta = Double(beta32)
            let m = zip(p, q).map { beta * $0 + (1 - beta) * $1 }
            return beta * kl(p, m) + (1 - beta) * kl(q, m)
        }
    }

    func probabilities(_ a: [Float], _ r: Int) -> [Double] {
        Self.logSoftmax((0..<v).map { Double(a[r * v + $0]) / Double(T) }).map(exp)
    }

    /// Weighted sum over rows / normalizer * T^2 of the full-vocabulary divergence.
    func refFull(_ d: KDDivergence, _ s: [Float], _ t: [Float]) -> Double {
        var total = 0.0
        for r in 0..<n where weights[r] > 0 {
            total += Double(weights[r]) * Self.divergence(d, p: probabilities(t, r), q: probabilities(s, r))
        }
        return total / normalizer * Double(T * T)
    }

    /// The same over the teacher's top-k tokens plus one tail bucket.
    func refTopK(_ d: KDDivergence, _ s: [Float], _ tk: TopK) -> Double {
        var total = 0.0
        for r in 0..<n where weights[r] > 0 {
            let q = probabilities(s, r)
            let ids = (0..<tk.k).map { Int(tk.ids[r * tk.k + $0]) }
            var pb = ids.indices.map { exp(Double(tk.logProbs[r * tk.k + $0])) }
            var qb = ids.map { q[$0] }
            let qTail = (0..<v).filter { !ids.contains($0) }.reduce(0) { $0 + q[$1] }
            if qTail > 0 {
                pb.append(d == .reverseKL ? max(Double(tk.tail[r]), Double(Float.ulpOfOne)) : Double(tk.tail[r]))
                qb.append(qTail)
            }
            total += Double(weights[r]) * Self.divergence(d, p: pb, q: qb)
        }
        return total / normalizer * Double(T * T)
    }

    struct TopK { let k: Int; let ids: [Int32]; let logProbs: [Float]; let tail: [Float] }

    func teacherTopK(_ t: [Float], k: Int) -> TopK {
        var ids = [Int32](), lps = [Float](), tail = [Float]()
        for r in 0..<n {
            let lp = Self.logSoftmax((0..<v).map { Double(t[r * v + $0]) / Double(T) })
            let order = (0..<v).sorted { lp[$0] > lp[$1] }.prefix(k)
            var mass = 0.0
            for j in order { ids.append(Int32(j)); lps.append(Float(lp[j])); mass += exp(lp[j]) }
            tail.append(k == v ? 0 : Float(max(0, 1 - mass)))
        }
        return TopK(k: k, ids: ids, logProbs: lps, tail: tail)
    }

    func finiteDifferences(_ s: [Float], h: Double = 1.0 / 512, _ f: ([Float]) -> Double) -> [Double] {
        (0..<s.count).map { i in
            var sp = s, sm = s
            sp[i] += Float(h); sm[i] -= Float(h)
            return (f(sp) - f(sm)) / (Double(sp[i]) - Double(sm[i]))
        }
    }

    func assertClose(_ a: [Float], _ b: [Double], tol: Double, _ message: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        var worst = 0.0, at = 0
        for i in 0..<min(a.count, b.count) where abs(Double(a[i]) - b[i]) > worst { worst = abs(Double(a[i]) - b[i]); at = i }
        XCTAssertLessThanOrEqual(worst, tol, "\(message): worst |diff| \(worst) at \(at)", file: file, line: line)
    }

    // MARK: - Calling KDLoss

    func options(_ d: KDDivergence) -> KDLoss.Options { KDLoss.Options(temperature: T, divergence: d) }

    func full(_ d: KDDivergence, _ s: [Float], _ t: [Float], inPlace: Bool = false) -> (Double, [Float]) {
        var g = inPlace ? s : [Float](repeating: .nan, count: s.count)
        let loss = s.withUnsafeBufferPointer { sp in t.withUnsafeBufferPointer { tp in
            g.withUnsafeMutableBufferPointer { gp in
                KDLoss.fullLogits(student: inPlace ? UnsafePointer(gp.baseAddress!) : sp.baseAddress!, vocab: v,
                                  teacher: tp.baseAddress!, weights: weights, normalizer: normalizer,
                                  options: options(d), gradient: gp.baseAddress!)
            }
        } }
        return (loss, g)
    }

    func topK(_ d: KDDivergence, _ s: [Float], _ tk: TopK, inPlace: Bool = false) -> (Double, [Float]) {
        var g = inPlace ? s : [Float](repeating: .nan, count: s.count)
        let loss = s.withUnsafeBufferPointer { sp in g.withUnsafeMutableBufferPointer { gp in
            KDLoss.topK(student: inPlace ? UnsafePointer(gp.baseAddress!) : sp.baseAddress!, vocab: v, ids: tk.ids,
                        logProbs: tk.logProbs, k: tk.k, tailMass: tk.tail, weights: weights, normalizer: normalizer,
                        options: options(d), gradient: gp.baseAddress!)
        } }
        return (loss, g)
    }

    // MARK: - Tests

    func testFullLogitsMatchDirectComputationAndFiniteDifferences() {
        let s = randomLogits(seed: 21), t = randomLogits(seed: 22)
        for d in divergences {
            let (loss, g) = full(d, s, t)
            let ref = refFull(d, s, t)
            XCTAssertGreaterThan(ref, 0.02, "\(d)")
            XCTAssertEqual(loss, ref, accuracy: 1e-5 * max(1, ref), "\(d) \(beta(d))")
            assertClose(g, finiteDifferences(s) { refFull(d, $0, t) }, tol: 2e-5, "\(d) \(beta(d)) full gradient vs finite differences")
            XCTAssertTrue(g[v..<(2 * v)].allSatisfy { $0 == 0 }, "masked row")
        }
    }

    func testTopKMatchesDirectBucketedComputationAndFiniteDifferences() {
        let s = randomLogits(seed: 23), t = randomLogits(seed: 24)
        for d in divergences {
            for k in [1, 3, 5] {
                let tk = teacherTopK(t, k: k)
                XCTAssertTrue(tk.tail.allSatisfy { $0 > 0.01 }, "test teacher has a real tail")
                let (loss, g) = topK(d, s, tk)
                let ref = refTopK(d, s, tk)
                XCTAssertEqual(loss, ref, accuracy: 1e-5 * max(1, ref), "\(d) \(beta(d)) k = \(k)")
                assertClose(g, finiteDifferences(s) { refTopK(d, $0, tk) }, tol: 2e-5, "\(d) \(beta(d)) top-\(k) gradient vs finite differences")
                // Bucketing can only lose divergence (data-processing inequality).
                XCTAssertLessThanOrEqual(loss, full(d, s, t).0 + 1e-6, "\(d) \(beta(d)) k = \(k)")
                XCTAssertTrue(g[v..<(2 * v)].allSatisfy { $0 == 0 }, "masked row")
            }
        }
    }

    func testTopKOverTheWholeVocabularyEqualsFull() {
        let s = randomLogits(seed: 25), t = randomLogits(seed: 26)
        let tk = teacherTopK(t, k: v)
        for d in divergences {
            let (lossFull, gFull) = full(d, s, t), (loss, g) = topK(d, s, tk)
            XCTAssertEqual(loss, lossFull, accuracy: 1e-5 * max(1, lossFull), "\(d) \(beta(d))")
            assertClose(g, gFull.map(Double.init), tol: 1e-6, "\(d) \(beta(d)) top-V vs full gradient")
        }
    }

    func testZeroAtTheTeacherAndJSDSymmetry() {
        let s = randomLogits(seed: 27), t = randomLogits(seed: 28)
        for d in divergences {
            let (loss, g) = full(d, s, s)
            XCTAssertEqual(loss, 0, accuracy: 1e-6, "\(d)")
            assertClose(g, [Double](repeating: 0, count: n * v), tol: 1e-6, "\(d) gradient at the teacher")
        }
        // Swapping teacher and student and beta <-> 1 - beta leaves JSD unchanged; reverse KL
        // with the roles swapped is forward KL.
        XCTAssertEqual(full(.jsd(beta: 0.9), s, t).0, full(.jsd(beta: 0.1), t, s).0, accuracy: 1e-5)
        XCTAssertEqual(full(.reverseKL, s, t).0, full(.forwardKL, t, s).0, accuracy: 1e-5)
        // JSD is bounded by the entropy of the mixture weights (log 2 at beta = 1/2), times T^2.
        let far = s.map { $0 * 20 }
        XCTAssertLessThanOrEqual(full(.jsd(beta: 0.5), far, t.map { -$0 * 20 }).0,
                                 log(2) * Double(T * T) * Double(weights.reduce(0, +)) / normalizer + 1e-6)
    }

    func testGradientInPlace() {
        let s = randomLogits(seed: 29), t = randomLogits(seed: 30)
        let tk = teacherTopK(t, k: 4)
        for d in divergences {
            XCTAssertTrue(full(d, s, t) == full(d, s, t, inPlace: true), "\(d) full in place")
            XCTAssertTrue(topK(d, s, tk) == topK(d, s, tk, inPlace: true), "\(d) top-k in place")
        }
    }

    func testReverseKLWithAZeroTeacherTailStaysFinite() {
        let s = randomLogits(seed: 31), t = randomLogits(seed: 32)
        var tk = teacherTopK(t, k: 3)
        tk = TopK(k: 3, ids: tk.ids, logProbs: tk.logProbs, tail: [Float](repeating: 0, count: n))
        for d in divergences {
            let (loss, g) = topK(d, s, tk)
            XCTAssertTrue(loss.isFinite && loss > 0, "\(d): \(loss)")
            XCTAssertTrue(g.allSatisfy(\.isFinite), "\(d)")
            XCTAssertEqual(loss, refTopK(d, s, tk), accuracy: 1e-4 * max(1, loss), "\(d)")
        }
    }

    func testTemperatureSquaredScalesLossAndGradient() {
        let s = randomLogits(seed: 33), t = randomLogits(seed: 34)
        for d in divergences {
            let (scaled, gs) = full(d, s, t)
            var g = [Float](repeating: 0, count: s.count)
            let unscaled = KDLoss.fullLogits(student: s, vocab: v, teacher: t, weights: weights, normalizer: normalizer,
                                             options: KDLoss.Options(temperature: T, scaleByTemperatureSquared: false, divergence: d),
                                             gradient: &g)
            XCTAssertEqual(unscaled * Double(T * T), scaled, accuracy: 1e-6 * max(1, scaled))
            assertClose(g, gs.map { Double($0) / Double(T * T) }, tol: 1e-7, "\(d) unscaled gradient")
        }
    }

    func beta(_ d: KDDivergence) -> String {
        if case .jsd(let b) = d { return "beta \(b)" }
        return ""
    }
}
