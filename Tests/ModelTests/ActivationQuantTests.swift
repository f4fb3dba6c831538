@testable import Model
import Tensors
import TestSupport
import XCTest

/// The activation / KV-cache fake-quantizer (`ActivationQuantizer`) against PyTorch
/// (scripts/reference/act_quant.py, fixture `act-quant.json`: 5 rows x 32 with an outlier, a row
/// of rounding ties, an all-positive and a constant row; per-token a4/a8 asymmetric, a4
/// symmetric, clip 0.9, and KV-style groups of 8), through both seams; and properties on random
/// data without a fixture.
final class ActivationQuantTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let name: String
            let bits: Int
            let symmetric: Bool
            let clip: Float
            let group: Int
            let output: [Float]
            let gradient: [Float]
            let clipped: Int
        }
        let rows: Int, width: Int
        let x: [Float], w: [Float]
        let cases: [Case]
    }

    /// Forward within 1e-6 of torch's fq(x) (the same float32 operations in the same order, so
    /// in practice bit for bit; a tie rounded the other way would be off by a whole step), and
    /// the gradient of sum(w * x̂) within 1e-6 (it is w or 0). Both seams, and in place.
    func testMatchesTorchReference() throws {
        let ref = try TestPaths.loadJSON(Reference.self, fixture: "act-quant.json")
        let (n, width) = (ref.rows, ref.width)
        XCTAssertEqual(ref.x.count, n * width)
        XCTAssertEqual(ref.cases.count, 6)
        XCTAssertTrue(ref.cases.contains { $0.clipped > 0 }, "no case exercises the clip mask")

        for c in ref.cases {
            let q = ActivationQuantizer(bits: c.bits, symmetric: c.symmetric, clipRatio: c.clip, groupSize: c.group)
            let train: any TrainableInputTransform = TrainableActivationQuantizer(q)
            let infer: any LinearInputTransform = InPlaceActivationQuantizer(q, parallel: false)
            XCTAssertTrue(train.parameters.isEmpty)

            var y = [Float](repeating: .nan, count: n * width)
            var dx = [Float](repeating: .nan, count: n * width)
            var inPlace = ref.x
            ref.x.withUnsafeBufferPointer { x in
                ref.w.withUnsafeBufferPointer { w in
                    y.withUnsafeMutableBufferPointer { train.forward(x.baseAddress!, into: $0.baseAddress!, rows: n, width: width) }
                    dx.withUnsafeMutableBufferPointer {
                        train.backward(x: x.baseAddress!, dy: w.baseAddress!, dx: $0.baseAddress!, rows: n, width: width)
                    }
                }
            }
            inPlace.withUnsafeMutableBufferPointer { infer.transform($0.baseAddress!, rows: n, width: width) }

            var forwardError: Float = 0, gradientError: Float = 0, clipped = 0
            for i in 0..<(n * width) {
                forwardError = max(forwardError, abs(y[i] - c.output[i]))
                gradientError = max(gradientError, abs(dx[i] - c.gradient[i]))
                XCTAssertEqual(inPlace[i].bitPattern, y[i].bitPattern, "\(c.name): in place differs at \(i)")
                if dx[i] == 0 && ref.w[i] != 0 { clipped += 1 }
            }
            XCTAssertLessThanOrEqual(forwardError, 1e-6, "\(c.name): forward")
            XCTAssertLessThanOrEqual(gradientError, 1e-6, "\(c.name): gradient")
            XCTAssertEqual(clipped, c.clipped, "\(c.name): entries outside the clip")
        }
    }

    /// Ties round half to even (torch.round): with step 1 and zero 0, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    func testTiesRoundHalfToEven() {
        let x: [Float] = [0, 15, 0.5, 1.5, 2.5, 3.5, 14.5, 7]
        let y = apply(ActivationQuantizer(bits: 4), x, rows: 1, width: x.count)
        XCTAssertEqual(y, [0, 15, 0, 2, 2, 4, 14, 7])
    }

    /// Per token, a4 leaves at most 16 distinct values in each row, and KV groups at most 16 per
    /// head; a8 is closer to x than a4 (both schemes), and symmetric a4 codes stay in -8...7.
    func testLevelsAndErrorsOnRandomData() {
        let (rows, width, headDim) = (64, 96, 16)
        var rng = SeededRNG(seed: 1307)
        let x = (0..<(rows * width)).map { _ in rng.normal() * (1 + 4 * rng.uniform()) }
        for symmetric in [false, true] {
            let a4 = apply(ActivationQuantizer(bits: 4, symmetric: symmetric), x, rows: rows, width: width)
            let a8 = apply(ActivationQuantizer(bits: 8, symmetric: symmetric), x, rows: rows, width: width)
            for r in 0..<rows {
                let row = a4[(r * width)..<((r + 1) * width)]
                XCTAssertLessThanOrEqual(Set(row).count, 16, "row \(r)")
                XCTAssertGreaterThan(Set(row).count, 4, "row \(r)")
            }
            let e4 = meanSquaredError(a4, x), e8 = meanSquaredError(a8, x)
            XCTAssertLessThan(e8, e4 / 100, "symmetric \(symmetric): a8 \(e8), a4 \(e4)")
            XCTAssertGreaterThan(e8, 0)
        }
        let kv = apply(.kvCache(bits: 4, headDim: headDim), x, rows: rows, width: width)
        for g in 0..<(rows * width / headDim) {
            XCTAssertLessThanOrEqual(Set(kv[(g * headDim)..<((g + 1) * headDim)]).count, 16, "group \(g)")
        }
        // Finer groups fit better than one scale per token.
        XCTAssertLessThan(meanSquaredError(kv, x), meanSquaredError(apply(ActivationQuantizer(bits: 4), x, rows: rows, width: width), x))
    }

    /// A group whose step is 0 passes through forward and backward (constant asymmetric, zero
    /// symmetric), also with a clip ratio; the last group may be shorter than the group size.
    func testConstantGroupsAndShortLastGroup() {
        let x: [Float] = [0.75, 0.75, 0.75, 0.75, 0, 0, 0, 0, -1, 2]
        for symmetric in [false, true] {
            let q = ActivationQuantizer(bits: 4, symmetric: symmetric, clipRatio: 0.5, groupSize: 4)
            let y = apply(q, x, rows: 1, width: x.count)
            if !symmetric { XCTAssertEqual(Array(y[0..<8]), Array(x[0..<8])) }
            XCTAssertEqual(Array(y[4..<8]), [0, 0, 0, 0])
            var dx = [Float](repeating: .nan, count: x.count)
            let dy = [Float](repeating: 1, count: x.count)
            x.withUnsafeBufferPointer { xp in dy.withUnsafeBufferPointer { d in dx.withUnsafeMutableBufferPointer {
                q.backward(x: xp.baseAddress!, dy: d.baseAddress!, dx: $0.baseAddress!, rows: 1, width: x.count)
            } } }
            XCTAssertEqual(Array(dx[4..<8]), [1, 1, 1, 1], "symmetric \(symmetric)")
            // Last group (-1, 2), clip 0.5: asymmetric range [-0.5, 1], symmetric [-1, 1]: 2 is clipped.
            XCTAssertEqual(dx[9], 0, "symmetric \(symmetric)")
            XCTAssertEqual(dx[8], symmetric ? 1 : 0)
            if !symmetric { XCTAssertEqual(Array(dx[0..<4]), [1, 1, 1, 1]) }
        }
    }

    /// Split over threads (enough rows) the kernel gives the same bits as on one thread.
    func testParallelRowsMatchSerial() {
        let (rows, width) = (256, 320)
        var rng = SeededRNG(seed: 41)
        let x = (0..<(rows * width)).map { _ in rng.normal() }
        let dy = (0..<(rows * width)).map { _ in rng.normal() }
        XCTAssertGreaterThanOrEqual(rows * width, ActivationQuantizer.parallelElements)
        let q = ActivationQuantizer(bits: 4, clipRatio: 0.8)
        var serial = x, parallel = x
        serial.withUnsafeMutableBufferPointer { InPlaceActivationQuantizer(q, parallel: false).transform($0.baseAddress!, rows: rows, width: width) }
        parallel.withUnsafeMutableBufferPointer { InPlaceActivationQuantizer(q).transform($0.baseAddress!, rows: rows, width: width) }
        XCTAssertEqual(serial.map(\.bitPattern), parallel.map(\.bitPattern))
        var dxSerial = dy, dxParallel = dy
        x.withUnsafeBufferPointer { xp in
            dxSerial.withUnsafeMutableBufferPointer { q.backward(x: xp.baseAddress!, dy: $0.baseAddress!, dx: $0.baseAddress!, rows: rows, width: width, parallel: false) }
            dxParallel.withUnsafeMutableBufferPointer { q.backward(x: xp.baseAddress!, dy: $0.baseAddress!, dx: $0.baseAddress!, rows: rows, width: width) }
        }
        XCTAssertEqual(dxSerial, dxParallel)
        XCTAssertTrue(dxSerial.contains(0), "clip 0.8 masks nothing")
    }

    func testDescriptionAndKVFactory() {
        XCTAssertEqual(ActivationQuantizer(bits: 4).description, "a4-asym")
        XCTAssertEqual(ActivationQuantizer(bits: 8, symmetric: true, clipRatio: 0.9).description, "a8-sym-clip0.9")
        let kv = ActivationQuantizer.kvCache(bits: 4, headDim: 64)
        XCTAssertEqual(kv.groupSize, 64)
        XCTAssertEqual(kv.description, "a4-asym-g64")
    }

    // MARK: - Helpers

    private func apply(_ q: ActivationQuantizer, _ x: [Float], rows: Int, width: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { q.forward(xp.baseAddress!, into: $0.baseAddress!, rows: rows, width: width) } }
        return y
    }

    private func meanSquaredError(_ a: [Float], _ b: [Float]) -> Double {
        zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(a.count)
    }
}
