import CKernels
import Tensors
import XCTest

/// The decode matrix kernel against a plain loop in Double, for every activation-row count
/// 1...8, on every instruction-set path this CPU has (AVX-512, AVX2, portable), with widths
/// below, at and around the vector widths (tails under a mask or a scalar loop), strided X and
/// Y, row ranges that split unevenly (blocks of several weight rows plus leftover single rows),
/// and both overwrite and accumulate modes.
final class GemvKernelTests: XCTestCase {
    func testGemvRowsMatchesNaiveOnEveryPath() {
        var rng = SeededRNG(seed: 9)
        let best = rqat_gemv_best_isa()
        let paths = [RQAT_GEMV_PORTABLE, RQAT_GEMV_AVX2, RQAT_GEMV_AVX512].filter { $0 <= best }
        let maxN = Int(RQAT_GEMV_MAX_ROWS), rows = 31
        // Ranges as threads would take them, of 0, 1, 2, 3, 4, 5, 7 and 9 rows.
        let cuts = [0, 1, 1, 3, 6, 10, 15, 22, rows]
        for cols in [1, 5, 7, 8, 9, 15, 16, 17, 31, 33, 37, 64, 100, 576, 1537] {
            let ldx = cols + 3, ldy = rows + 2
            let w = Tensor(shape: [rows, cols]), x = Tensor(shape: [maxN, ldx])
            rng.fillNormal(w)
            rng.fillNormal(x)
            // Exact dot products and the scale of their rounding error (sum of |terms|).
            var dot = [Double](repeating: 0, count: maxN * rows), mag = dot
            for i in 0..<maxN {
                for r in 0..<rows {
                    for c in 0..<cols {
                        let t = Double(w.ptr[r * cols + c]) * Double(x.ptr[i * ldx + c])
                        dot[i * rows + r] += t
                        mag[i * rows + r] += abs(t)
                    }
                }
            }
            let y = Tensor(shape: [maxN, ldy])
            for isa in paths {
                for n in 1...maxN {
                    for accumulate in [false, true] {
                        y.fill(0.5)
                        for (lo, hi) in zip(cuts, cuts.dropFirst()) {
                            rqat_gemv_rows_isa(isa, x.ptr, n, ldx, w.ptr, cols, y.ptr, ldy, accumulate ? 1 : 0, lo, hi)
                        }
                        // Entries outside the n x rows result must be left alone.
                        var failures = 0
                        for i in 0..<maxN {
                            for r in 0..<ldy {
                                let inside = i < n && r < rows
                                let expected = inside ? (accumulate ? 0.5 : 0) + dot[i * rows + r] : 0.5
                                let tolerance = inside ? 1e-6 * (mag[i * rows + r] + 1) : 0
                                let got = Double(y.ptr[i * ldy + r])
                                if abs(got - expected) > tolerance && failures < 3 {
                                    failures += 1
                                    XCTFail("isa \(isa) cols \(cols) n \(n) accumulate \(accumulate): y[\(i), \(r)] = \(got), expected \(expected)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The default entry point is the best path, and agrees with it bit for bit.
    func testGemvRowsUsesBestPath() {
        var rng = SeededRNG(seed: 11)
        let rows = 13, cols = 100
        let w = Tensor(shape: [rows, cols]), x = Tensor(shape: [8, cols])
        rng.fillNormal(w)
        rng.fillNormal(x)
        for n in 1...Int(RQAT_GEMV_MAX_ROWS) {
            let a = Tensor(shape: [n, rows]), b = Tensor(shape: [n, rows])
            rqat_gemv_rows(x.ptr, n, cols, w.ptr, cols, a.ptr, rows, 0, 0, rows)
            rqat_gemv_rows_isa(rqat_gemv_best_isa(), x.ptr, n, cols, w.ptr, cols, b.ptr, rows, 0, 0, rows)
            for i in 0..<n * rows { XCTAssertEqual(a.ptr[i], b.ptr[i], "n \(n) entry \(i)") }
        }
    }

    /// Empty row ranges and n = 0 write nothing.
    func testGemvRowsEmptyRangesWriteNothing() {
        let w = Tensor(shape: [4, 16]), x = Tensor(shape: [8, 16]), y = Tensor(shape: [8, 4])
        w.fill(1)
        x.fill(1)
        y.fill(-3)
        rqat_gemv_rows(x.ptr, 8, 16, w.ptr, 16, y.ptr, 4, 0, 2, 2)
        rqat_gemv_rows(x.ptr, 0, 16, w.ptr, 16, y.ptr, 4, 0, 0, 4)
        for i in 0..<32 { XCTAssertEqual(y.ptr[i], -3) }
    }
}

/// Grouped-query attention of one KV head against a plain softmax(q K^T * scale) V in Double, on
/// every instruction-set path, for group sizes 1, 3 and 9 (more than one gemv pass over the
/// keys), lengths from one position up, and head sizes with and without a vector tail.
final class AttentionKernelTests: XCTestCase {
    func testAttendGroupMatchesNaiveOnEveryPath() {
        var rng = SeededRNG(seed: 21)
        let best = rqat_gemv_best_isa()
        let paths = [RQAT_GEMV_PORTABLE, RQAT_GEMV_AVX2, RQAT_GEMV_AVX512].filter { $0 <= best }
        for d in [8, 48, 64, 72] {
            for length in [1, 2, 17, 130] {
                for heads in [1, 3, 9] {
                    let q = Tensor(shape: [heads, d]), k = Tensor(shape: [length, d]), v = Tensor(shape: [length, d])
                    rng.fillNormal(q)
                    rng.fillNormal(k)
                    rng.fillNormal(v)
                    let scale = 1 / Float(d).squareRoot()
                    var expected = [Double](repeating: 0, count: heads * d)
                    for h in 0..<heads {
                        var s = (0..<length).map { j in (0..<d).reduce(0.0) { $0 + Double(q[h, $1]) * Double(k[j, $1]) } * Double(scale) }
                        let m = s.max()!
                        s = s.map { Foundation.exp($0 - m) }
                        let total = s.reduce(0, +)
                        for j in 0..<length {
                            for c in 0..<d { expected[h * d + c] += s[j] / total * Double(v[j, c]) }
                        }
                    }
                    for isa in paths {
                        let scores = Tensor(shape: [heads, length]), out = Tensor(shape: [heads, d])
                        rqat_attend_group_isa(isa, q.ptr, heads, k.ptr, v.ptr, length, d, scale, scores.ptr, out.ptr)
                        let worst = (0..<heads * d).map { abs(Double(out.ptr[$0]) - expected[$0]) }.max()!
                        XCTAssertLessThan(worst, 2e-5, "isa \(isa) d \(d) length \(length) heads \(heads)")
                    }
                }
            }
        }
    }
}
