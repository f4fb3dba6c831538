import Formats
import Quant
import Tensors
import XCTest

final class RTNTests: XCTestCase {
    /// Asymmetric 4-bit, one group: min -0.3, max 1.2 → scale 1.5/15 = 0.1, which fp16 stores
    /// as 0.0999755859375; zero = round(0.3 / 0.1) = 3; codes round(x / scale) + 3.
    func testAsymmetricHandExample() {
        let w = Tensor(shape: [1, 4], values: [-0.3, 0.1, 0.7, 1.2])
        let q = RTN.quantize(w, scheme: QuantScheme(weightBits: 4))
        XCTAssertEqual(q.scales, [0.0999755859375])
        XCTAssertEqual(q.zeros, [3])
        XCTAssertEqual(q.codes, [0, 4, 10, 15])
        XCTAssertEqual(q.gIdx, [0, 0, 0, 0])
        XCTAssertEqual(q.dequantized().array, [0, 4, 10, 15].map { Float(0.0999755859375) * (Float($0) - 3) })
    }

    /// Symmetric 4-bit: range ±0.8 → scale 1.6/15 = 0.10667 → fp16 0.106689453125, zero 8;
    /// -0.8 / scale = -7.498 rounds to -7 (code 1): GPTQ's symmetric grid is -8...7 around 8.
    func testSymmetricHandExample() {
        let w = Tensor(shape: [1, 4], values: [-0.8, 0.1, 0.35, 0.4])
        let q = RTN.quantize(w, scheme: QuantScheme(weightBits: 4, symmetric: true))
        XCTAssertEqual(q.scales, [0.106689453125])
        XCTAssertEqual(q.zeros, [8])
        XCTAssertEqual(q.codes, [1, 9, 11, 12])
        // 2-bit, all values positive: asymmetric zero 0 (min clamps to 0), scale 3/3 = 1.
        let p = RTN.quantize(Tensor(shape: [1, 4], values: [0.4, 1, 2.6, 3]), scheme: QuantScheme(weightBits: 2))
        XCTAssertEqual(p.scales, [1])
        XCTAssertEqual(p.zeros, [0])
        XCTAssertEqual(p.codes, [0, 1, 3, 3])
    }

    /// Scales/zeros are (groups, rows): entry [g * rows + r] is row r's grid over group g's columns.
    func testGroupLayoutMatchesPerGroupGrids() {
        var rng = SeededRNG(seed: 7)
        let rows = 5, cols = 64
        let w = Tensor(shape: [rows, cols])
        rng.fillNormal(w)
        let q = RTN.quantize(w, scheme: QuantScheme(weightBits: 3, groupSize: 16))
        XCTAssertEqual(q.groupCount, 4)
        XCTAssertEqual(q.gIdx, (0..<cols).map { Int32($0 / 16) })
        let deq = q.dequantized()
        let fake = Tensor(shape: [rows, cols])
        q.fakeQuantized(into: fake.ptr)
        XCTAssertEqual(deq.array, fake.array)
        for r in 0..<rows {
            for g in 0..<4 {
                let grid = QuantGrid(values: w.row(r) + 16 * g, count: 16, bits: 3, symmetric: false).roundedToFP16()
                XCTAssertEqual(q.scales[g * rows + r], grid.scale)
                XCTAssertEqual(q.zeros[g * rows + r], grid.zero)
                for j in 0..<16 {
                    XCTAssertEqual(Int(q.codes[r * cols + 16 * g + j]), grid.code(w[r, 16 * g + j]))
                    XCTAssertEqual(deq[r, 16 * g + j], grid.fakeQuantize(w[r, 16 * g + j]))
                }
            }
        }
    }

    /// SmolLM2's 576 columns at G128: 5 groups, the last of 64 columns with its own range.
    func testShortLastGroup() {
        var rng = SeededRNG(seed: 3)
        let rows = 3, cols = 576
        let w = Tensor(shape: [rows, cols])
        rng.fillNormal(w, std: 0.02)
        w[0, 575] = 4    // an outlier only the last group sees
        w[1, 511] = -4   // one only group 3 sees
        let q = RTN.quantize(w, scheme: QuantScheme(weightBits: 4, groupSize: 128))
        XCTAssertEqual(q.groupCount, 5)
        XCTAssertEqual(q.scales.count, 5 * rows)
        XCTAssertEqual(q.gIdx[511], 3)
        XCTAssertEqual(q.gIdx[512], 4)
        XCTAssertEqual(q.gIdx[575], 4)
        let last = QuantGrid(values: w.row(0) + 512, count: 64, bits: 4, symmetric: false).roundedToFP16()
        XCTAssertEqual(q.scales[4 * rows + 0], last.scale)
        XCTAssertGreaterThan(q.scales[4 * rows + 0], 0.2)   // the outlier widened group 4 of row 0
        XCTAssertLessThan(q.scales[3 * rows + 0], 0.02)     // ...and not group 3
        XCTAssertGreaterThan(q.scales[3 * rows + 1], 0.2)
        XCTAssertLessThan(q.scales[4 * rows + 1], 0.02)
        XCTAssertEqual(q.dequantized()[0, 575], last.fakeQuantize(4))
    }

    func groupErrors(_ w: Tensor, _ q: QuantizedMatrix, group: Int, norm: Float) -> [Float] {
        let deq = q.dequantized()
        var out: [Float] = []
        for r in 0..<q.rows {
            for g in 0..<q.groupCount {
                var e: Float = 0
                for j in g * group..<min(q.cols, (g + 1) * group) {
                    e += powf(abs(w[r, j] - deq[r, j]), norm)
                }
                out.append(e)
            }
        }
        return out
    }

    /// On heavy-tailed weights the MSE clip search lowers the total error clearly, and no
    /// group's error goes up (shrink 1 is among the candidates).
    func testClipSearchLowersErrorAndNeverRaisesIt() {
        var rng = SeededRNG(seed: 11)
        let rows = 48, cols = 256
        let w = Tensor(shape: [rows, cols])
        for i in 0..<w.count {
            let z = rng.normal()
            w.ptr[i] = z * z * z * 0.01   // cubed normal: heavy tails
        }
        for scheme in [QuantScheme(weightBits: 3, groupSize: 128), QuantScheme(weightBits: 4, groupSize: 64, symmetric: true),
                       QuantScheme(weightBits: 2, groupSize: 32)] {
            let plain = RTN.quantize(w, scheme: scheme)
            let clipped = RTN.quantize(w, scheme: scheme, clipSearch: ClipSearch(grid: 100, maxShrink: 0.8, norm: 2.4))
            let g = scheme.groupSize!
            let e0 = groupErrors(w, plain, group: g, norm: 2.4), e1 = groupErrors(w, clipped, group: g, norm: 2.4)
            for (a, b) in zip(e0, e1) { XCTAssertLessThanOrEqual(b, a * (1 + 1e-5), "\(scheme)") }
            let total0 = e0.reduce(0, +), total1 = e1.reduce(0, +)
            XCTAssertLessThan(total1, 0.95 * total0, "\(scheme): clip search \(total1) vs none \(total0)")
            // Some groups really are clipped (scale smaller than the full-range one).
            XCTAssertTrue(zip(plain.scales, clipped.scales).contains { $1 < $0 }, "\(scheme)")
        }
        XCTAssertEqual(ClipSearch().shrinks.count, 80)
        XCTAssertEqual(ClipSearch().shrinks.first, 1)
        XCTAssertEqual(ClipSearch().shrinks.last!, 0.21, accuracy: 1e-6)
    }

    /// Every scale RTN produces is an fp16 value (so packing is lossless), and the helper for
    /// other quantizers rounds and keeps scales positive.
    func testScalesAreFP16Values() {
        var rng = SeededRNG(seed: 5)
        let w = Tensor(shape: [16, 64])
        rng.fillNormal(w, std: 0.05)
        let q = RTN.quantize(w, scheme: QuantScheme(weightBits: 4, groupSize: 32), clipSearch: ClipSearch())
        XCTAssertTrue(q.scales.allSatisfy { Float(Float16($0)) == $0 && $0 > 0 })
        XCTAssertEqual(QuantGrid(scale: 1e-12, zero: 0, maxCode: 15).roundedToFP16().scale, Float(Float16.leastNonzeroMagnitude))
        XCTAssertEqual(QuantGrid(scale: 0.1, zero: 3, maxCode: 15).roundedToFP16(), QuantGrid(scale: 0.0999755859375, zero: 3, maxCode: 15))
    }
}
