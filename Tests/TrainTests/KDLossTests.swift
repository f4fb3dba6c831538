import Foundation
import XCTest
import Tensors
import Train

/// `KDLoss`: forward KL(teacher || student) at temperature T in its three teacher encodings,
/// against direct Double computations and central finite differences of those.
final class KDLossTests: XCTestCase, KDBatch {
    let n = 4, v = 9
    let weights: [Float] = [1, 0, 0.5, 2]
    let normalizer = 3.5
    let options = KDLoss.Options(temperature: 2)

    // MARK: - Helpers


    func row(_ a: [Float], _ r: Int, _ T: Double) -> [Double] { (0..<v).map { Double(a[r * v + $0]) / T } }

    /// Direct Double full KL, summed with weights, / normalizer, times T^2.
    func refFull(_ s: [Float], _ t: [Float], T: Double) -> Double {
        var total = 0.0
        for r in 0..<n where weights[r] > 0 {
            let lq = Self.logSoftmax(row(s, r, T)), lp = Self.logSoftmax(row(t, r, T))
            var kl = 0.0
            for j in 0..<v { kl += exp(lp[j]) * (lp[j] - lq[j]) }
            total += Double(weights[r]) * kl
        }
        return total / normalizer * T * T
    }

    /// Direct Double top-k + tail KL (ids, logProbs N*k, tail N), weighted, / normalizer, times T^2.
    func refTopK(_ s: [Float], ids: [Int32], logProbs: [Float], k: Int, tail: [Float], T: Double) -> Double {
        var total = 0.0
        for r in 0..<n where weights[r] > 0 {
            let lq = Self.logSoftmax(row(s, r, T))
            var kl = 0.0, qK = 0.0
            for kk in 0..<k {
                let id = Int(ids[r * k + kk]), lp = Double(logProbs[r * k + kk])
                kl += exp(lp) * (lp - lq[id])
                qK += exp(lq[id])
            }
            let pTail = Double(tail[r])
            if pTail > 0 { kl += pTail * (log(pTail) - log(1 - qK)) }
            total += Double(weights[r]) * kl
        }
        return total / normalizer * T * T
    }

    /// Central finite differences of a Double function of the student logits.
    func finiteDifferences(_ s: [Float], h: Double = 1e-3, _ f: ([Float]) -> Double) -> [Double] {
        // Perturb in Double by evaluating on Float inputs offset exactly representable steps:
        // use h as a power of two so s ± h is exact for moderate |s|.
        (0..<s.count).map { i in
            var sp = s, sm = s
            sp[i] += Float(h); sm[i] -= Float(h)
            let hp = Double(sp[i]) - Double(s[i]), hm = Double(s[i]) - Double(sm[i])
            return (f(sp) - f(sm)) / (hp + hm)
        }
    }

    func assertClose(_ a: [Float], _ b: [Double], tol: Double, _ message: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        var worst = 0.0, at = 0
        for i in 0..<min(a.count, b.count) where abs(Double(a[i]) - b[i]) > worst {
            worst = abs(Double(a[i]) - b[i]); at = i
        }
        XCTAssertLessThanOrEqual(worst, tol, "\(message): worst |diff| \(worst) at \(at) (\(a[at]) vs \(b[at]))",
                                 file: file, line: line)
    }

    func full(_ s: [Float], _ t: [Float], options: KDLoss.Options? = nil) -> (Double, [Float]) {
        var g = [Float](repeating: .nan, count: s.count)
        let loss = s.withUnsafeBufferPointer { sp in t.withUnsafeBufferPointer { tp in
            g.withUnsafeMutableBufferPointer { gp in
                KDLoss.fullLogits(student: sp.baseAddress!, vocab: v, teacher: tp.baseAddress!, weights: weights,
                                  normalizer: normalizer, options: options ?? self.options, gradient: gp.baseAddress!)
            }
        } }
        return (loss, g)
    }

    func topK(_ s: [Float], ids: [Int32], logProbs: [Float], k: Int, tail: [Float]) -> (Double, [Float]) {
        var g = [Float](repeating: .nan, count: s.count)
        let loss = s.withUnsafeBufferPointer { sp in g.withUnsafeMutableBufferPointer { gp in
            KDLoss.topK(student: sp.baseAddress!, vocab: v, ids: ids, logProbs: logProbs, k: k, tailMass: tail,
                        weights: weights, normalizer: normalizer, options: options, gradient: gp.baseAddress!)
        } }
        return (loss, g)
    }

    func sampled(_ s: [Float], draws: [[(id: Int, count: Int)]]) -> (Double, [Float]) {
        var g = [Float](repeating: .nan, count: s.count)
        let loss = s.withUnsafeBufferPointer { sp in g.withUnsafeMutableBufferPointer { gp in
            KDLoss.sampled(student: sp.baseAddress!, vocab: v, draws: draws, weights: weights,
                           normalizer: normalizer, options: options, gradient: gp.baseAddress!)
        } }
        return (loss, g)
    }

    /// Teacher top-k (by probability) at temperature T: ids, log-probabilities, tail mass.
    func teacherTopK(_ t: [Float], k: Int) -> (ids: [Int32], logProbs: [Float], tail: [Float]) {
        var ids = [Int32](), lps = [Float](), tail = [Float]()
        for r in 0..<n {
            let lp = Self.logSoftmax(row(t, r, Double(options.temperature)))
            let order = (0..<v).sorted { lp[$0] > lp[$1] }.prefix(k)
            var mass = 0.0
            for j in order { ids.append(Int32(j)); lps.append(Float(lp[j])); mass += exp(lp[j]) }
            tail.append(k == v ? 0 : Float(max(0, 1 - mass)))
        }
        return (ids, lps, tail)
    }

    // MARK: - Full logits

    func testFullLogitsMatchesDirectComputationAndFiniteDifferences() {
        let s = randomLogits(seed: 1), t = randomLogits(seed: 2)
        let T = Double(options.temperature)
        let (loss, g) = full(s, t)
        let ref = refFull(s, t, T: T)
        XCTAssertGreaterThan(ref, 0.05)
        XCTAssertEqual(loss, ref, accuracy: 1e-5 * max(1, abs(ref)))
        let fd = finiteDifferences(s, h: 1.0 / 512) { refFull($0, t, T: T) }
        assertClose(g, fd, tol: 2e-5, "full-logit gradient vs finite differences")
        // Closed form (q - p) / T * T^2 * w / normalizer.
        var closed = [Double](repeating: 0, count: n * v)
        for r in 0..<n {
            let lq = Self.logSoftmax(row(s, r, T)), lp = Self.logSoftmax(row(t, r, T))
            for j in 0..<v { closed[r * v + j] = (exp(lq[j]) - exp(lp[j])) / T * T * T * Double(weights[r]) / normalizer }
        }
        assertClose(g, closed, tol: 1e-6, "full-logit gradient vs (q - p)/T")

        // Without the T^2 convention, loss and gradient are T^2 smaller.
        let (loss1, g1) = full(s, t, options: KDLoss.Options(temperature: 2, scaleByTemperatureSquared: false))
        XCTAssertEqual(loss1 * T * T, loss, accuracy: 1e-6 * max(1, loss))
        assertClose(g1, g.map { Double($0) / (T * T) }, tol: 1e-7, "unscaled gradient")
    }

    func testZeroWhenStudentEqualsTeacher() {
        let s = randomLogits(seed: 3)
        let (loss, g) = full(s, s)
        XCTAssertEqual(loss, 0, accuracy: 1e-6)
        assertClose(g, [Double](repeating: 0, count: n * v), tol: 1e-7, "gradient at student == teacher")
        // Shifting teacher logits by a per-row constant does not change its distribution.
        let shifted = s.enumerated().map { $0.element + Float($0.offset / v) * 3 }
        let (lossShift, gShift) = full(s, shifted)
        XCTAssertEqual(lossShift, 0, accuracy: 1e-5)
        assertClose(gShift, [Double](repeating: 0, count: n * v), tol: 1e-6, "gradient with shifted teacher")
    }

    // MARK: - Top-k + tail

    func testTopKWithFullVocabularyEqualsFull() {
        let s = randomLogits(seed: 4), t = randomLogits(seed: 5)
        let (lossFull, gFull) = full(s, t)
        let tk = teacherTopK(t, k: v)
        let (loss, g) = topK(s, ids: tk.ids, logProbs: tk.logProbs, k: v, tail: tk.tail)
        XCTAssertEqual(loss, lossFull, accuracy: 1e-5 * max(1, lossFull))
        assertClose(g, gFull.map(Double.init), tol: 1e-6, "top-k (k = V) gradient vs full")
    }

    func testTopKGradientMatchesFiniteDifferences() {
        let s = randomLogits(seed: 6), t = randomLogits(seed: 7)
        let T = Double(options.temperature)
        for k in [1, 3, 5] {
            let tk = teacherTopK(t, k: k)
            XCTAssertTrue(tk.tail.allSatisfy { $0 > 0.01 }, "test teacher has a real tail")
            let (loss, g) = topK(s, ids: tk.ids, logProbs: tk.logProbs, k: k, tail: tk.tail)
            let ref = refTopK(s, ids: tk.ids, logProbs: tk.logProbs, k: k, tail: tk.tail, T: T)
            XCTAssertEqual(loss, ref, accuracy: 1e-5 * max(1, abs(ref)), "k = \(k)")
            let fd = finiteDifferences(s, h: 1.0 / 512) {
                refTopK($0, ids: tk.ids, logProbs: tk.logProbs, k: k, tail: tk.tail, T: T)
            }
            assertClose(g, fd, tol: 2e-5, "top-k (k = \(k)) gradient vs finite differences")
            // The bucketed KL never exceeds the full KL (data processing inequality).
            XCTAssertLessThanOrEqual(loss, full(s, t).0 + 1e-6)
        }
    }

    // MARK: - Sampled

    func testSampledEqualsClosedFormForGivenCounts() {
        let s = randomLogits(seed: 8)
        let T = Double(options.temperature)
        let draws: [[(id: Int, count: Int)]] = [[(2, 3), (5, 1)], [], [(0, 7), (8, 2), (0, 1)], [(4, 5)]]
        let (loss, g) = sampled(s, draws: draws)
        var expected = [Double](repeating: 0, count: n * v)
        var expectedLoss = 0.0
        for r in 0..<n where weights[r] > 0 {
            var c = [Double](repeating: 0, count: v)
            for d in draws[r] { c[d.id] += Double(d.count) }
            let m = c.reduce(0, +)
            let lq = Self.logSoftmax(row(s, r, T))
            let scale = T * T * Double(weights[r]) / normalizer
            for j in 0..<v {
                expected[r * v + j] = (exp(lq[j]) - c[j] / m) / T * scale
                expectedLoss -= c[j] / m * lq[j] * scale
            }
        }
        assertClose(g, expected, tol: 1e-6, "sampled gradient vs (q - c/m)/T")
        XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * max(1, abs(expectedLoss)))
    }

    func testSampledApproachesFullWithManyDraws() {
        let s = randomLogits(seed: 9), t = randomLogits(seed: 10)
        let T = Double(options.temperature)
        let m = 200_000
        var rng = SeededRNG(seed: 11)
        var draws = [[(id: Int, count: Int)]]()
        var entropy = 0.0
        for r in 0..<n {
            let lp = Self.logSoftmax(row(t, r, T))
            let p = lp.map { exp($0) }
            if weights[r] > 0 { entropy -= Double(weights[r]) * zip(p, lp).reduce(0) { $0 + $1.0 * $1.1 } }
            var cdf = [Double](), acc = 0.0
            for x in p { acc += x; cdf.append(acc) }
            var counts = [Int](repeating: 0, count: v)
            for _ in 0..<m {
                let u = rng.uniformDouble() * acc
                counts[cdf.firstIndex { u < $0 } ?? (v - 1)] += 1
            }
            draws.append(counts.enumerated().filter { $0.element > 0 }.map { (id: $0.offset, count: $0.element) })
        }
        let (loss, g) = sampled(s, draws: draws)
        let (lossFull, gFull) = full(s, t)
        // Per entry: std of c/m <= sqrt(0.25/m) ~ 1.1e-3, times T * w / normalizer <= 1.15.
        assertClose(g, gFull.map(Double.init), tol: 6e-3, "sampled gradient vs full (m = \(m))")
        // Cross-entropy estimate = KL + teacher entropy (constant), up to sampling noise.
        XCTAssertEqual(loss, lossFull + entropy / normalizer * T * T, accuracy: 0.02)
    }

    // MARK: - Mask and in-place

    func testMaskedPositionsContributeNothing() {
        let s = randomLogits(seed: 12), t = randomLogits(seed: 13)
        var s2 = s, t2 = t
        for j in 0..<v { s2[v + j] = Float(j) * 5; t2[v + j] = -Float(j) * 7 }   // row 1 has weight 0
        let masked = v..<(2 * v)

        let (a, ga) = full(s, t), (b, gb) = full(s2, t2)
        XCTAssertEqual(a, b, accuracy: 1e-9)
        XCTAssertTrue(gb[masked].allSatisfy { $0 == 0 }, "full: masked row gradient is zero")
        XCTAssertEqual(ga, gb)

        let tk = teacherTopK(t, k: 3), tk2 = teacherTopK(t2, k: 3)
        let (c, gc) = topK(s, ids: tk.ids, logProbs: tk.logProbs, k: 3, tail: tk.tail)
        var ids2 = tk.ids, lps2 = tk.logProbs, tail2 = tk.tail
        for kk in 0..<3 { ids2[3 + kk] = tk2.ids[3 + kk]; lps2[3 + kk] = tk2.logProbs[3 + kk] }
        tail2[1] = tk2.tail[1]
        let (d, gd) = topK(s2, ids: ids2, logProbs: lps2, k: 3, tail: tail2)
        XCTAssertEqual(c, d, accuracy: 1e-9)
        XCTAssertTrue(gd[masked].allSatisfy { $0 == 0 }, "top-k: masked row gradient is zero")
        XCTAssertEqual(gc, gd)

        let draws: [[(id: Int, count: Int)]] = [[(1, 2)], [(3, 4)], [(6, 1)], [(0, 1), (2, 1)]]
        var draws2 = draws
        draws2[1] = []
        let (e, ge) = sampled(s, draws: draws), (f, gf) = sampled(s2, draws: draws2)
        XCTAssertEqual(e, f, accuracy: 1e-9)
        XCTAssertTrue(gf[masked].allSatisfy { $0 == 0 }, "sampled: masked row gradient is zero")
        XCTAssertEqual(ge, gf)

        // Zero weights everywhere: no loss at all.
        let zero = KDLoss.fullLogits(student: s, vocab: v, teacher: t, weights: [0, 0, 0, 0],
                                     normalizer: 1, options: options, gradient: nil)
        XCTAssertEqual(zero, 0)
    }

    func testGradientInPlace() {
        let s = randomLogits(seed: 14), t = randomLogits(seed: 15)
        let (lossFull, gFull) = full(s, t)
        var buf = s
        let lossFullIn = buf.withUnsafeMutableBufferPointer { b in
            t.withUnsafeBufferPointer { tp in
                KDLoss.fullLogits(student: b.baseAddress!, vocab: v, teacher: tp.baseAddress!, weights: weights,
                                  normalizer: normalizer, options: options, gradient: b.baseAddress!)
            }
        }
        XCTAssertEqual(lossFullIn, lossFull)
        XCTAssertEqual(buf, gFull)

        let tk = teacherTopK(t, k: 4)
        let (lossTop, gTop) = topK(s, ids: tk.ids, logProbs: tk.logProbs, k: 4, tail: tk.tail)
        buf = s
        let lossTopIn = buf.withUnsafeMutableBufferPointer { b in
            KDLoss.topK(student: b.baseAddress!, vocab: v, ids: tk.ids, logProbs: tk.logProbs, k: 4,
                        tailMass: tk.tail, weights: weights, normalizer: normalizer, options: options,
                        gradient: b.baseAddress!)
        }
        XCTAssertEqual(lossTopIn, lossTop)
        XCTAssertEqual(buf, gTop)

        let draws: [[(id: Int, count: Int)]] = [[(1, 2), (7, 3)], [(3, 4)], [(6, 1)], [(0, 1), (2, 1)]]
        let (lossS, gS) = sampled(s, draws: draws)
        buf = s
        let lossSIn = buf.withUnsafeMutableBufferPointer { b in
            KDLoss.sampled(student: b.baseAddress!, vocab: v, draws: draws, weights: weights,
                           normalizer: normalizer, options: options, gradient: b.baseAddress!)
        }
        XCTAssertEqual(lossSIn, lossS)
        XCTAssertEqual(buf, gS)
    }
}
