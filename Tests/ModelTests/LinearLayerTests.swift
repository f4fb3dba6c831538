@testable import Model
import Tensors
import XCTest

/// The dense linear layer's three products (gemv for up to 8 rows, the tiled gemv for batched
/// decoding and prefill, sgemm beyond) against a double-precision reference.
final class LinearLayerTests: XCTestCase {
    func testEveryRowCountMatchesTheReferenceProduct() {
        var rng = SeededRNG(seed: 9)
        let inF = 96, outF = 70   // neither a multiple of the kernels' blocks nor of the tile
        let w = Tensor(shape: [outF, inF]), bias = Tensor(shape: [outF])
        for i in 0..<w.count { w.ptr[i] = rng.normal() }
        for i in 0..<outF { bias.ptr[i] = rng.normal() }
        let layer = LinearLayer(dense: w, bias: bias)
        for n in [1, 5, 8, 9, 17, 32, 64, 100] {
            for accumulate in [false, true] {
                let x = Tensor(shape: [n, inF]), y = Tensor(shape: [n, outF])
                for i in 0..<x.count { x.ptr[i] = rng.normal() }
                for i in 0..<y.count { y.ptr[i] = rng.normal() }
                let before = (0..<y.count).map { Double(y.ptr[$0]) }
                layer.apply(n, x, into: y, accumulate: accumulate)
                var worst = 0.0
                for r in 0..<n {
                    for j in 0..<outF {
                        var sum = Double(bias.ptr[j]) + (accumulate ? before[r * outF + j] : 0)
                        for k in 0..<inF { sum += Double(x.ptr[r * inF + k]) * Double(w.ptr[j * inF + k]) }
                        worst = max(worst, abs(sum - Double(y.ptr[r * outF + j])))
                    }
                }
                XCTAssertLessThan(worst, 1e-4, "\(n) rows, accumulate \(accumulate)")
            }
        }
    }
}
