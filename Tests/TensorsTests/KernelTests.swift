import CKernels
import Tensors
import XCTest

/// The decode matrix kernel against a plain loop in Double, for every activation-row count,
/// widths that leave a tail after the vector loop, row ranges that split unevenly, and both
/// overwrite and accumulate modes.
final class GemvKernelTests: XCTestCase {
    func testGemvRowsMatchesNaive() {
        var rng = SeededRNG(seed: 9)
        for cols in [5, 16, 37, 576] {
            let rows = 23
            let w = Tensor(shape: [rows, cols])
            rng.fillNormal(w)
            for n in 1...Int(RQAT_GEMV_MAX_ROWS) {
                let x = Tensor(shape: [n, cols])
                rng.fillNormal(x)
                for accumulate in [false, true] {
                    let y = Tensor(shape: [n, rows])
                    y.fill(0.5)
                    // Two uneven ranges, as two threads would take them.
                    rqat_gemv_rows(x.ptr, n, cols, w.ptr, cols, y.ptr, rows, accumulate ? 1 : 0, 0, 9)
                    rqat_gemv_rows(x.ptr, n, cols, w.ptr, cols, y.ptr, rows, accumulate ? 1 : 0, 9, rows)
                    for i in 0..<n {
                        for r in 0..<rows {
                            var s = accumulate ? 0.5 : 0.0
                            for c in 0..<cols { s += Double(w[r, c]) * Double(x[i, c]) }
                            XCTAssertEqual(Double(y[i, r]), s, accuracy: 1e-4 * max(1, abs(s)),
                                           "cols \(cols) n \(n) row \(r) accumulate \(accumulate)")
                        }
                    }
                }
            }
        }
    }
}
