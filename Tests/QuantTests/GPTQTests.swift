import Formats
import Foundation
import Quant
import Tensors
import TestSupport
import XCTest

final class GPTQTests: XCTestCase {
    private struct Reference: Decodable {
        struct Case: Decodable {
            let name: String
            let bits: Int
            let group_size: Int
            let act_order: Bool
            let damp: Double
            let codes_hex: String
            let scales: [Float]
            let zeros: [Float]
            let g_idx: [Int32]
            let perm: [Int]
            let loss: Double
            let rel_error: Double
            let rtn_rel_error: Double
        }
        let cases: [Case]
    }

    private func loadLayer() throws -> (weight: Tensor, hessian: Hessian) {
        let file = try SafeTensorsFile(url: TestPaths.fixture("gptq-hessian.safetensors"))
        return (try file.tensor("weight"), Hessian(matrix: try file.tensor("hessian"), samples: 2048))
    }

    /// Against scripts/make-reference.py --only gptq (a PyTorch GPTQ with the same conventions).
    func testMatchesReference() throws {
        let reference = try TestPaths.loadJSON(Reference.self, fixture: "gptq-reference.json")
        let (weight, hessian) = try loadLayer()
        XCTAssertEqual(reference.cases.count, 2)
        for c in reference.cases {
            let scheme = QuantScheme(weightBits: c.bits, groupSize: c.group_size, symmetric: false)
            let result = try GPTQ.quantize(weight: weight, hessian: hessian, scheme: scheme,
                                           options: GPTQOptions(actOrder: c.act_order), layerName: c.name)
            let m = result.matrix
            let expected = c.codes_hex.utf8.map { UInt8(Int(String(UnicodeScalar($0)), radix: 16)!) }
            XCTAssertEqual(m.codes.count, expected.count)
            let agree = Double(zip(m.codes, expected).filter { $0 == $1 }.count) / Double(expected.count)
            let ratio = result.stats.relativeOutputError / c.rel_error
            print("GPTQ \(c.name): codes agree \(String(format: "%.4f", agree * 100))%, rel error \(result.stats.relativeOutputError) vs reference \(c.rel_error) (ratio \(ratio)); loss \(result.stats.loss) vs \(c.loss); damp \(result.stats.damp) vs \(c.damp)")
            XCTAssertGreaterThanOrEqual(agree, 0.98, c.name)
            XCTAssertEqual(ratio, 1, accuracy: 0.01, c.name)
            XCTAssertEqual(result.stats.damp, c.damp, accuracy: 1e-6 * c.damp, c.name)
            XCTAssertEqual(result.stats.deadColumns, 1, c.name)
            XCTAssertEqual(m.gIdx, c.g_idx, c.name)
            XCTAssertEqual(m.hasPermutedGroups, c.act_order, c.name)
            let scalesClose = zip(m.scales, c.scales).filter { abs($0 - $1) <= 1e-3 * abs($1) }.count
            XCTAssertGreaterThanOrEqual(Double(scalesClose) / Double(c.scales.count), 0.98, c.name)

            // GPTQ beats round-to-nearest by a clear margin on this layer.
            let rtn = RTN.quantize(weight, scheme: scheme)
            let rtnError = GPTQ.relativeOutputError(weight: weight, quantized: rtn.dequantized(), hessian: hessian)
            print("GPTQ \(c.name): RTN rel error \(rtnError) (reference \(c.rtn_rel_error)); GPTQ/RTN \(result.stats.relativeOutputError / rtnError)")
            XCTAssertEqual(rtnError, c.rtn_rel_error, accuracy: 0.01 * c.rtn_rel_error, c.name)
            XCTAssertLessThan(result.stats.relativeOutputError, 0.9 * rtnError, c.name)
        }
    }

    /// Random activations with correlated columns (and optional dead ones).
    private func randomHessian(dim: Int, samples: Int, seed: UInt64, dead: [Int] = []) -> Hessian {
        var rng = SeededRNG(seed: seed)
        let x = Tensor(shape: [samples, dim])
        rng.fillNormal(x)
        for n in 0..<samples {
            for j in stride(from: dim - 1, to: 0, by: -1) { x[n, j] += 0.5 * x[n, j - 1] }
            for j in dead { x[n, j] = 0 }
        }
        let h = Hessian(dim: dim)
        h.add(rows: x.ptr, count: samples / 2)
        h.add(rows: x.ptr + (samples / 2) * dim, count: samples - samples / 2)
        return h
    }

    func testHessianRunningAverageEqualsTwoOverNXtX() {
        var rng = SeededRNG(seed: 11)
        let x = Tensor(shape: [37, 5])
        rng.fillNormal(x)
        let h = Hessian(dim: 5)
        h.add(rows: x.ptr, count: 10)
        h.add(rows: x.ptr + 50, count: 27)
        XCTAssertEqual(h.samples, 37)
        for i in 0..<5 {
            for j in 0..<5 {
                var s = 0.0
                for n in 0..<37 { s += Double(x[n, i]) * Double(x[n, j]) }
                XCTAssertEqual(h.matrix[i * 5 + j], 2 * s / 37, accuracy: 1e-5)
            }
        }
    }

    func testNotPositiveDefiniteThrowsNamingTheLayer() {
        let w = Tensor(shape: [4, 4])
        var rng = SeededRNG(seed: 5)
        rng.fillNormal(w)
        let scheme = QuantScheme(weightBits: 4)
        // A negative diagonal entry (no Gram matrix has one).
        let negative = Tensor(shape: [4, 4])
        for i in 0..<4 { negative[i, i] = 1 }
        negative[2, 2] = -1e4
        // Strongly indefinite: eigenvalues -99 and 101 with mean diagonal 1, beyond any damping limit.
        let indefinite = Tensor(shape: [4, 4])
        for i in 0..<4 { indefinite[i, i] = 1 }
        indefinite[0, 1] = 100; indefinite[1, 0] = 100
        for (h, layer) in [(negative, "model.layers.3.mlp.down_proj"), (indefinite, "model.layers.0.self_attn.q_proj")] {
            XCTAssertThrowsError(try GPTQ.quantize(weight: w, hessian: Hessian(matrix: h), scheme: scheme, layerName: layer)) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("Hessian of \(layer) is not positive definite after dampening"), message)
                XCTAssertTrue(message.contains("--damp"), message)
            }
        }
        // Mildly indefinite (rounding-level negative eigenvalue): the automatic damping raise rescues it.
        let mild = Tensor(shape: [4, 4])
        for i in 0..<4 { mild[i, i] = 1 }
        mild[0, 1] = 1.05; mild[1, 0] = 1.05  // eigenvalues 2.05, 1, 1, -0.05; λ0 = 0.01 fails, 0.1 works
        let result = try? GPTQ.quantize(weight: w, hessian: Hessian(matrix: mild), scheme: scheme, layerName: "mild")
        XCTAssertNotNil(result)
        if let r = result { XCTAssertEqual(r.stats.damp, 0.1, accuracy: 1e-9) }
    }

    func testDeadInputColumnsAreZeroAndHarmless() throws {
        let rows = 16, cols = 96
        let dead = [0, 5, 64, 95]
        let h = randomHessian(dim: cols, samples: 400, seed: 21, dead: dead)
        let w = Tensor(shape: [rows, cols])
        var rng = SeededRNG(seed: 22)
        rng.fillNormal(w, std: 0.05)
        for act in [false, true] {
            let result = try GPTQ.quantize(weight: w, hessian: h, scheme: QuantScheme(weightBits: 3, groupSize: 32),
                                           options: GPTQOptions(blockSize: 32, actOrder: act), layerName: "dead")
            XCTAssertEqual(result.stats.deadColumns, dead.count)
            let q = result.matrix.dequantized()
            XCTAssertTrue(q.buffer.allSatisfy { $0.isFinite })
            for r in 0..<rows { for c in dead { XCTAssertEqual(q[r, c], 0, "row \(r) col \(c)") } }
            XCTAssertTrue(result.stats.relativeOutputError.isFinite && result.stats.relativeOutputError < 0.5)
            // The Hessian object is shared input, never modified (q/k/v or gate/up reuse it).
            for c in dead { XCTAssertEqual(h.matrix[c * cols + c], 0) }
        }
    }

    func testIdentityHessianEqualsRTN() throws {
        let rows = 24, cols = 320  // 320 = 2 full groups of 128 and a short one of 64
        let w = Tensor(shape: [rows, cols])
        var rng = SeededRNG(seed: 31)
        rng.fillNormal(w, std: 0.02)
        let eye = Tensor(shape: [cols, cols])
        for i in 0..<cols { eye[i, i] = 1 }
        for scheme in [QuantScheme(weightBits: 4, groupSize: 128), QuantScheme(weightBits: 3, groupSize: 64),
                       QuantScheme(weightBits: 4, groupSize: 128, symmetric: true), QuantScheme(weightBits: 2)] {
            let result = try GPTQ.quantize(weight: w, hessian: Hessian(matrix: eye), scheme: scheme, layerName: "eye")
            let rtn = RTN.quantize(w, scheme: scheme)
            XCTAssertEqual(result.matrix.codes, rtn.codes, "\(scheme)")
            XCTAssertEqual(result.matrix.scales, rtn.scales, "\(scheme)")
            XCTAssertEqual(result.matrix.zeros, rtn.zeros, "\(scheme)")
            XCTAssertEqual(result.matrix.gIdx, rtn.gIdx, "\(scheme)")
        }
    }

    func testActOrderVariantsAndSharedHessian() throws {
        let cols = 192
        let h = randomHessian(dim: cols, samples: 600, seed: 41)
        var rng = SeededRNG(seed: 42)
        let q = Tensor(shape: [32, cols]), k = Tensor(shape: [16, cols])
        rng.fillNormal(q, std: 0.02)
        rng.fillNormal(k, std: 0.02)
        let before = h.matrix
        let scheme = QuantScheme(weightBits: 3, groupSize: 64)
        for w in [q, k] {  // two layers, one Hessian
            let rtn = RTN.quantize(w, scheme: scheme)
            let rtnError = GPTQ.relativeOutputError(weight: w, quantized: rtn.dequantized(), hessian: h)
            for (act, stat) in [(false, false), (true, false), (true, true)] {
                let r = try GPTQ.quantize(weight: w, hessian: h, scheme: scheme,
                                          options: GPTQOptions(blockSize: 64, actOrder: act, staticGroups: stat),
                                          layerName: "shared")
                XCTAssertLessThan(r.stats.relativeOutputError, rtnError, "act \(act) static \(stat)")
                // Static groups keep the sequential layout; g_idx act-order permutes it.
                XCTAssertEqual(r.matrix.hasPermutedGroups, act && !stat)
                // The g_idx convention: every group holds exactly groupSize columns.
                var sizes = [Int](repeating: 0, count: r.matrix.groupCount)
                for g in r.matrix.gIdx { sizes[Int(g)] += 1 }
                XCTAssertEqual(sizes, [64, 64, 64])
            }
        }
        XCTAssertEqual(h.matrix, before)
    }

    func testClipSearchDoesNotHurt() throws {
        let cols = 128
        let h = randomHessian(dim: cols, samples: 400, seed: 51)
        var rng = SeededRNG(seed: 52)
        let w = Tensor(shape: [16, cols])
        rng.fillNormal(w, std: 0.02)
        let scheme = QuantScheme(weightBits: 3, groupSize: 32)
        let plain = try GPTQ.quantize(weight: w, hessian: h, scheme: scheme, layerName: "clip")
        let clipped = try GPTQ.quantize(weight: w, hessian: h, scheme: scheme,
                                        options: GPTQOptions(clipSearch: .gptq), layerName: "clip")
        XCTAssertLessThan(clipped.stats.relativeOutputError, plain.stats.relativeOutputError * 1.05)
    }
}
