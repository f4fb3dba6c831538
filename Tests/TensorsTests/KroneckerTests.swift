import XCTest
import Tensors

/// `KroneckerFactors` against the explicit n x n matrix L ⊗ R, its backward against finite
/// differences, and `SmallMatrix.inverse`.
final class KroneckerTests: XCTestCase {
    static func random(_ count: Int, _ rng: inout SeededRNG, std: Float = 1) -> [Float] {
        (0..<count).map { _ in std * rng.normal() }
    }

    /// (L ⊗ R)[i b + j, k b + l] = L[i, k] R[j, l], as an (n, n) row-major matrix.
    static func explicit(_ f: KroneckerFactors, _ left: [Float], _ right: [Float]) -> [Float] {
        let a = f.a, b = f.b, n = f.n
        var m = [Float](repeating: 0, count: n * n)
        for i in 0..<a { for j in 0..<b { for k in 0..<a { for l in 0..<b {
            m[(i * b + j) * n + k * b + l] = left[i * a + k] * right[j * b + l]
        } } } }
        return m
    }

    /// x m for rows of x, in Double.
    static func multiply(_ x: [Float], _ m: [Float], rows: Int, n: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * n)
        for r in 0..<rows { for k in 0..<n { let v = Double(x[r * n + k]); for j in 0..<n { y[r * n + j] += v * Double(m[k * n + j]) } } }
        return y
    }

    func apply(_ f: KroneckerFactors, _ x: [Float], _ left: [Float], _ right: [Float], rows: Int) -> [Float] {
        var y = [Float](repeating: 0, count: x.count), z = [Float](repeating: 0, count: x.count)
        y.withUnsafeMutableBufferPointer { yp in
            z.withUnsafeMutableBufferPointer { zp in
                f.apply(x, into: yp.baseAddress!, rows: rows, left: left, right: right, scratch: zp.baseAddress!)
            }
        }
        return y
    }

    func testBalancedFactors() {
        XCTAssertEqual(KroneckerFactors.balanced(576), KroneckerFactors(a: 24, b: 24))
        XCTAssertEqual(KroneckerFactors.balanced(1536), KroneckerFactors(a: 32, b: 48))
        XCTAssertEqual(KroneckerFactors.balanced(48), KroneckerFactors(a: 6, b: 8))
        XCTAssertEqual(KroneckerFactors.balanced(7), KroneckerFactors(a: 1, b: 7))
    }

    func testApplyEqualsTheExplicitKroneckerProduct() {
        var rng = SeededRNG(seed: 3)
        // b < 8, and b with 16-column strips, an 8-column strip and a tail (the AVX2 kernel's paths).
        for (a, b) in [(3, 5), (4, 4), (1, 6), (5, 8), (3, 24), (2, 19), (24, 24)] {
            let f = KroneckerFactors(a: a, b: b), rows = 7
            let x = Self.random(rows * f.n, &rng), l = Self.random(a * a, &rng), r = Self.random(b * b, &rng)
            let got = apply(f, x, l, r, rows: rows)
            let want = Self.multiply(x, Self.explicit(f, l, r), rows: rows, n: f.n)
            for i in 0..<got.count { XCTAssertEqual(Double(got[i]), want[i], accuracy: 1e-4 * max(1, abs(want[i])), "\(a)x\(b) entry \(i)") }
        }
    }

    /// Loss = Σ y ⊙ g is linear in each of x, L and R, so central differences are exact up to rounding.
    func testBackwardMatchesFiniteDifferences() {
        for (a, b) in [(3, 4), (4, 20), (2, 9)] { checkBackward(KroneckerFactors(a: a, b: b)) }
    }

    func checkBackward(_ f: KroneckerFactors) {
        var rng = SeededRNG(seed: 5)
        let rows = 5, n = f.n, a2 = f.a * f.a, b2 = f.b * f.b
        let x = Self.random(rows * n, &rng), l = Self.random(a2, &rng), r = Self.random(b2, &rng), g = Self.random(rows * n, &rng)
        func loss(_ x: [Float], _ l: [Float], _ r: [Float]) -> Double {
            zip(apply(f, x, l, r, rows: rows), g).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        var dx = [Float](repeating: 0, count: x.count), dl = [Float](repeating: 0.5, count: a2), dr = [Float](repeating: -0.25, count: b2)
        var z = [Float](repeating: 0, count: x.count), dz = z
        dx.withUnsafeMutableBufferPointer { dxp in dl.withUnsafeMutableBufferPointer { dlp in dr.withUnsafeMutableBufferPointer { drp in
            z.withUnsafeMutableBufferPointer { zp in dz.withUnsafeMutableBufferPointer { dzp in
                f.backward(x: x, dy: g, dx: dxp.baseAddress!, rows: rows, left: l, right: r, dLeft: dlp.baseAddress!, dRight: drp.baseAddress!,
                           scratch: zp.baseAddress!, scratch2: dzp.baseAddress!)
            } }
        } } }
        let eps: Float = 0.01
        func check(_ analytic: [Float], _ offset: Float, _ perturbed: (Int, Float) -> Double, _ what: String) {
            for i in 0..<analytic.count {
                let numeric = (perturbed(i, eps) - perturbed(i, -eps)) / Double(2 * eps)
                XCTAssertEqual(Double(analytic[i] - offset), numeric, accuracy: 2e-3 * max(1, abs(numeric)), "\(f.a)x\(f.b) \(what)[\(i)]")
            }
        }
        check(dx, 0, { i, e in var p = x; p[i] += e; return loss(p, l, r) }, "dx")
        // dLeft and dRight were ADDED to their starting values 0.5 and -0.25.
        check(dl, 0.5, { i, e in var p = l; p[i] += e; return loss(x, p, r) }, "dL")
        check(dr, -0.25, { i, e in var p = r; p[i] += e; return loss(x, l, p) }, "dR")

        // Without dL and dR requested, dx alone, the same.
        var dxOnly = [Float](repeating: 0, count: x.count)
        dxOnly.withUnsafeMutableBufferPointer { dxp in z.withUnsafeMutableBufferPointer { zp in dz.withUnsafeMutableBufferPointer { dzp in
            f.backward(x: x, dy: g, dx: dxp.baseAddress!, rows: rows, left: l, right: r, dLeft: nil, dRight: nil,
                       scratch: zp.baseAddress!, scratch2: dzp.baseAddress!)
        } } }
        XCTAssertEqual(dxOnly, dx)
    }

    func testInverseTimesMatrixIsTheIdentity() throws {
        var rng = SeededRNG(seed: 9)
        let n = 12
        var m = Self.random(n * n, &rng, std: 0.3)
        for i in 0..<n { m[i * n + i] += 1 }
        let inv = try XCTUnwrap(SmallMatrix.inverse(m, size: n))
        let p = SmallMatrix.product(m, inv, size: n)
        for i in 0..<n { for j in 0..<n { XCTAssertEqual(p[i * n + j], i == j ? 1 : 0, accuracy: 1e-5) } }
        XCTAssertEqual(SmallMatrix.transposed([1, 2, 3, 4], size: 2), [1, 3, 2, 4])
        XCTAssertNil(SmallMatrix.inverse([1, 2, 2, 4], size: 2), "singular")
        XCTAssertNil(SmallMatrix.inverse([0, 0, 0, 0], size: 2), "zero")
    }

    func testRandomOrthogonalIsOrthogonalAndSeeded() {
        for n in [1, 5, 24, 48] {
            var rng = SeededRNG(seed: UInt64(n))
            let q = SmallMatrix.randomOrthogonal(size: n, rng: &rng)
            let qqt = SmallMatrix.product(q, SmallMatrix.transposed(q, size: n), size: n)
            for i in 0..<n { for j in 0..<n { XCTAssertEqual(qqt[i * n + j], i == j ? 1 : 0, accuracy: 1e-5, "n \(n)") } }
            if n > 1 { XCTAssertGreaterThan(q.map(abs).filter { $0 > 1e-3 }.count, n * n / 2, "n \(n): dense, not a permutation") }
            var same = SeededRNG(seed: UInt64(n)), other = SeededRNG(seed: UInt64(n) + 100)
            XCTAssertEqual(SmallMatrix.randomOrthogonal(size: n, rng: &same), q)
            if n > 1 { XCTAssertNotEqual(SmallMatrix.randomOrthogonal(size: n, rng: &other), q) }
        }
    }
}
