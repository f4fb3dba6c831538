import Tensors
import XCTest

final class HadamardTests: XCTestCase {
    /// The base orders the supported models' widths need (40 = 20 x 2 is only a decomposition).
    static let baseOrders = [1, 12, 20, 28, 36, 40, 44, 52, 60, 76, 108, 140]
    /// The widths the supported models' rotations need.
    static let modelSizes = [64, 128, 576, 1536, 1024, 2048, 3072, 4096, 8192, 896, 4864, 8960, 5632, 2816]
    /// Every K x 2^m <= 8192 for the base orders above, and the model widths.
    static let composedSizes: [Int] = {
        var sizes = Set(modelSizes)
        for k in baseOrders {
            var n = k
            while n <= 8192 { sizes.insert(n); n *= 2 }
        }
        return sizes.sorted()
    }()

    func testModelWidthsUseTheSmallestBase() throws {
        let expected: [Int: (Int, Int)] = [
            64: (1, 64), 1024: (1, 1024), 8192: (1, 8192), 576: (36, 16), 1536: (12, 128), 3072: (12, 256),
            896: (28, 32), 4864: (76, 64), 8960: (140, 64), 5632: (44, 128), 2816: (44, 64), 40: (20, 2), 2: (1, 2),
        ]
        for (n, (k, p)) in expected {
            let plan = try Hadamard.decomposition(order: n)
            XCTAssertEqual(plan.baseOrder, k, "\(n)")
            XCTAssertEqual(plan.powerOfTwo, p, "\(n)")
        }
        XCTAssertEqual(Hadamard.construction(baseOrder: 12), .paleyI(q: 11))
        XCTAssertEqual(Hadamard.construction(baseOrder: 28), .paleyII(q: 13))
        XCTAssertEqual(Hadamard.construction(baseOrder: 36), .paleyII(q: 17))
        XCTAssertEqual(Hadamard.construction(baseOrder: 52), .paleyII(q: 25))
        XCTAssertEqual(Hadamard.construction(baseOrder: 76), .paleyII(q: 37))
        XCTAssertEqual(Hadamard.construction(baseOrder: 140), .paleyI(q: 139))
        XCTAssertEqual(Hadamard.baseOrders(upTo: 60), [1, 12, 20, 28, 36, 44, 52, 60])
    }

    /// H Hᵀ = K I in integers for every base matrix up to 160 (all constructible K, including the
    /// list above), and for both Paley constructions over prime and extension fields — GF(9),
    /// GF(25), GF(27), GF(49), GF(81), GF(121), GF(125) and GF(243) exercise the polynomial
    /// arithmetic (a wrong quadratic character breaks orthogonality).
    func testBaseMatricesAreHadamard() throws {
        for k in 1...160 {
            guard let construction = Hadamard.construction(baseOrder: k) else { continue }
            assertHadamard(Hadamard.baseMatrix(construction).map(Int.init), order: k, "\(construction)")
        }
        for k in Self.baseOrders where k != 40 { XCTAssertNotNil(Hadamard.construction(baseOrder: k), "\(k)") }
        for q in [3, 7, 11, 27, 243] {   // q ≡ 3 (mod 4): order q + 1
            assertHadamard(Hadamard.paleyMatrix(q: q).map(Int.init), order: q + 1, "Paley I over GF(\(q))")
        }
        for q in [5, 9, 13, 25, 49, 81, 121, 125] {   // q ≡ 1 (mod 4): order 2(q + 1)
            assertHadamard(Hadamard.paleyMatrix(q: q).map(Int.init), order: 2 * (q + 1), "Paley II over GF(\(q))")
        }
    }

    /// For every composed size: the explicit matrix is Hadamard, and the fast transform is the
    /// explicit product.
    ///
    /// The references are exact integers from sgemm: the rows are random integers in
    /// [-1024, 1024] and H is ±1, so every partial sum of x H or x Hᵀ is an integer below
    /// 1024 · 8960 < 2^24, which fp32 holds exactly in any summation order. (The same products
    /// by naive loops over these 95 matrices of up to 8960² entries take about 15 s in a debug
    /// build; `testFastTransformMatchesNaiveDoubleProduct` does that for n <= 1024.)
    ///
    /// Orthogonality: for n <= 128 the whole H Hᵀ in integers; for every n Freivalds' check
    /// v H Hᵀ = n v for two random integer vectors v, entries in [-1024, 1024]. u = v H is exact
    /// as above, and so is u Hᵀ = Σ_t 1024^t · (d_t Hᵀ) over the signed base-1024 digits d_t of u.
    /// A wrong H Hᵀ passes each vector with probability at most 1/2049 (fix all of v but one
    /// entry that meets a nonzero of H Hᵀ - n I: one value of it of 2049 cancels).
    ///
    /// Transform: the two rows through apply against x H / sqrt(n) and through applyTransposed
    /// against x Hᵀ / sqrt(n), relative error ‖Δ‖₂ / ‖y‖₂ <= 1e-5; and each inverts the other.
    func testComposedMatricesAreHadamardAndTheFastTransformIsTheirProduct() throws {
        var rng = SeededRNG(seed: 13)
        // One buffer for all orders: fresh pages for each matrix would cost seconds of page faults.
        let largest = Self.composedSizes.last!
        let h = UnsafeMutablePointer<Float>.allocate(capacity: largest * largest)
        defer { h.deallocate() }
        for n in Self.composedSizes {
            try Hadamard.matrix(order: n, into: h)
            if n <= 128 {
                let explicit = try Hadamard.matrix(order: n)
                XCTAssertEqual(explicit, Array(UnsafeBufferPointer(start: h, count: n * n)), "order \(n)")
                assertHadamard(explicit.map { Int($0) }, order: n, "order \(n)")
            }

            // probes: (4, n), rows 0-1 the transform's inputs x, rows 2-3 Freivalds' v.
            let probes = (0..<4 * n).map { _ in Float(Int(rng.next() % 2049) - 1024) }
            let probesH = product(probes, rows: 4, h, order: n, transposed: false)
            // Rows 0-1: x again; rows 2-4 and 5-7: the digits of u = v H for each v.
            var second = Array(probes[0..<2 * n])
            for r in 2..<4 {
                let u = probesH[r * n ..< (r + 1) * n].map { Int($0) }
                for t in 0..<3 {
                    second += u.map { Float(($0 < 0 ? -1 : 1) * ((abs($0) >> (10 * t)) & 1023)) }
                }
            }
            let secondHt = product(second, rows: 8, h, order: n, transposed: true)
            for r in 2..<4 {
                let digits = 2 + 3 * (r - 2)
                let wrong = (0..<n).filter { i in
                    let uHt = (0..<3).reduce(0) { $0 + (Int(secondHt[(digits + $1) * n + i]) << (10 * $1)) }
                    return uHt != n * Int(probes[r * n + i])
                }.count
                XCTAssertEqual(wrong, 0, "order \(n): v H Hᵀ != n v")
            }

            let x = Array(probes[0..<2 * n])   // x: (2, n)
            let scale = 1 / Double(n).squareRoot()
            try assertTransform(x, order: n, xH: probesH[0..<2 * n].map { Double($0) * scale },
                                xHt: secondHt[0..<2 * n].map { Double($0) * scale })
        }
    }

    /// The same comparison on normal random rows against x H and x Hᵀ summed naively in
    /// Double, for the composed sizes up to 1024 (larger ones cost seconds in a debug build).
    func testFastTransformMatchesNaiveDoubleProduct() throws {
        var rng = SeededRNG(seed: 29)
        for n in Self.composedSizes where n <= 1024 {
            let h = try Hadamard.matrix(order: n)
            let x = (0..<2 * n).map { _ in rng.normal() }   // x: (2, n)
            let xd = x.map(Double.init)
            var xH = [Double](repeating: 0, count: 2 * n), xHt = xH
            h.withUnsafeBufferPointer { h in
            xd.withUnsafeBufferPointer { xd in
            xH.withUnsafeMutableBufferPointer { xH in
            xHt.withUnsafeMutableBufferPointer { xHt in
                for r in 0..<2 {
                    let xr = xd.baseAddress! + r * n, y = xH.baseAddress! + r * n, z = xHt.baseAddress! + r * n
                    for i in 0..<n {
                        let hi = h.baseAddress! + i * n
                        for j in 0..<n {
                            let e = Double(hi[j])
                            y[j] += xr[i] * e   // (x H)_j = Σ_i x_i H_ij
                            z[i] += xr[j] * e   // (x Hᵀ)_i = Σ_j x_j H_ij
                        }
                    }
                }
            }}}}
            let scale = 1 / Double(n).squareRoot()
            try assertTransform(x, order: n, xH: xH.map { $0 * scale }, xHt: xHt.map { $0 * scale })
        }
    }

    /// Paley matrices are not symmetric, so the two directions really differ (a transform that
    /// applied H where Hᵀ was meant would pass a round trip through itself only by accident).
    func testForwardAndTransposedDifferForPaleyBases() throws {
        let transform = try HadamardTransform(size: 24)   // 12 x 2, Paley I over GF(11)
        var rng = SeededRNG(seed: 5)
        let x = (0..<24).map { _ in rng.normal() }
        var forward = x, backward = x
        forward.withUnsafeMutableBufferPointer { transform.apply($0.baseAddress!, rows: 1) }
        backward.withUnsafeMutableBufferPointer { transform.applyTransposed($0.baseAddress!, rows: 1) }
        XCTAssertGreaterThan(relativeError(forward, backward.map(Double.init)), 0.1)
    }

    func testUnsupportedOrdersThrowNamingTheOrder() {
        for n in [0, 3, 6, 10, 156, 172, 188] {   // 188 = 47 x 4: neither 187 nor 93 is a prime power
            XCTAssertThrowsError(try HadamardTransform(size: n), "\(n)") { error in
                XCTAssertTrue(error is UserFacingError)
                let text = "\(error)"
                XCTAssertTrue(text.contains("order \(n)"), text)
                XCTAssertFalse(text.contains("\n"), text)
                if n == 6 || n == 10 || n == 3 { XCTAssertTrue(text.contains("no Hadamard matrix of order \(n) exists"), text) }
                if n >= 156 { XCTAssertTrue(text.contains("K in [1, 12, 20, 28, 36, 44, 52, 60,"), text) }
            }
            XCTAssertThrowsError(try Hadamard.matrix(order: n), "\(n)")
        }
    }

    /// apply(x) = xH and applyTransposed(x) = xHt within 1e-5 relative, and each undoes the other.
    /// x, xH, xHt: (rows, n).
    private func assertTransform(_ x: [Float], order n: Int, xH: [Double], xHt: [Double]) throws {
        let transform = try HadamardTransform(size: n)
        let rows = x.count / n
        var forward = x, backward = x
        forward.withUnsafeMutableBufferPointer { transform.apply($0.baseAddress!, rows: rows) }
        backward.withUnsafeMutableBufferPointer { transform.applyTransposed($0.baseAddress!, rows: rows) }
        XCTAssertLessThanOrEqual(relativeError(forward, xH), 1e-5, "apply, order \(n)")
        XCTAssertLessThanOrEqual(relativeError(backward, xHt), 1e-5, "applyTransposed, order \(n)")
        forward.withUnsafeMutableBufferPointer { transform.applyTransposed($0.baseAddress!, rows: rows) }
        backward.withUnsafeMutableBufferPointer { transform.apply($0.baseAddress!, rows: rows) }
        let original = x.map(Double.init)
        XCTAssertLessThanOrEqual(relativeError(forward, original), 1e-5, "applyTransposed after apply, order \(n)")
        XCTAssertLessThanOrEqual(relativeError(backward, original), 1e-5, "apply after applyTransposed, order \(n)")
    }

    /// a · H, or a · Hᵀ, by sgemm. a: (rows, n), h: (n, n).
    private func product(_ a: [Float], rows: Int, _ h: UnsafePointer<Float>, order n: Int, transposed: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: rows * n)
        a.withUnsafeBufferPointer { a in
        out.withUnsafeMutableBufferPointer { out in
            Gemm.sgemm(transB: transposed, m: rows, n: n, k: n, a: a.baseAddress!, lda: n,
                       b: h, ldb: n, c: out.baseAddress!, ldc: n)
        }}
        return out
    }

    /// H Hᵀ = order · I, exactly, for a row-major ±1 matrix.
    private func assertHadamard(_ h: [Int], order n: Int, _ what: String) {
        XCTAssertEqual(h.count, n * n, what)
        XCTAssertTrue(h.allSatisfy { $0 == 1 || $0 == -1 }, "\(what): entries not ±1")
        var wrong = 0
        h.withUnsafeBufferPointer { h in
            let h = h.baseAddress!
            for i in 0..<n {
                for k in i..<n {
                    var dot = 0, j = 0
                    while j < n { dot += h[i * n + j] * h[k * n + j]; j += 1 }
                    if dot != (i == k ? n : 0) { wrong += 1 }
                }
            }
        }
        XCTAssertEqual(wrong, 0, "\(what): H Hᵀ != \(n) I")
    }

    /// ‖a - b‖₂ / ‖b‖₂.
    private func relativeError(_ a: [Float], _ b: [Double]) -> Double {
        var diff = 0.0, norm = 0.0
        for i in b.indices {
            diff += (Double(a[i]) - b[i]) * (Double(a[i]) - b[i])
            norm += b[i] * b[i]
        }
        return (diff / norm).squareRoot()
    }
}
