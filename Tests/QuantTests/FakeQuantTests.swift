import Foundation
import XCTest
import Formats
import Model
import Quant
import Tensors
import Train

/// `FakeQuantizer` (STE and LSQ fake quantization) and its use by `TrainableDecoder`.
final class FakeQuantTests: XCTestCase {

    // MARK: - Helpers

    static func matrix(_ name: String, rows: Int, cols: Int, values: [Float]) -> Parameter {
        Parameter(name: name, value: Tensor(shape: [rows, cols], values: values))
    }

    static func randomMatrix(_ name: String, rows: Int, cols: Int, seed: UInt64, std: Float = 1) -> Parameter {
        let t = Tensor(shape: [rows, cols])
        var rng = SeededRNG(seed: seed)
        rng.fillNormal(t, std: std)
        return Parameter(name: name, value: t)
    }

    /// RTN fake quantization through `QuantGrid`, group by group (the reference for STE).
    static func rtn(_ w: Tensor, groupSize: Int, bits: Int, symmetric: Bool) -> (values: [Float], clamped: [Bool]) {
        let rows = w.shape[0], cols = w.shape[1]
        var out = [Float](repeating: 0, count: w.count), clamped = [Bool](repeating: false, count: w.count)
        for r in 0..<rows {
            var lo = 0
            while lo < cols {
                let hi = min(cols, lo + groupSize)
                let grid = QuantGrid(values: w.ptr + r * cols + lo, count: hi - lo, bits: bits, symmetric: symmetric)
                for j in lo..<hi {
                    let x = w.ptr[r * cols + j]
                    out[r * cols + j] = grid.fakeQuantize(x)
                    let u = (x / grid.scale).rounded(.toNearestOrEven) + grid.zero
                    clamped[r * cols + j] = u < 0 || u > Float(grid.maxCode)
                }
                lo = hi
            }
        }
        return (out, clamped)
    }

    static func tinyConfig() -> ModelConfig {
        // MLP width 40 = 16 + 16 + 8: down_proj has a short last group at g16.
        ModelConfig(modelType: .llama, hiddenSize: 32, intermediateSize: 40, numHiddenLayers: 2,
                    numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: 64,
                    rmsNormEps: 1e-6, ropeTheta: 100)
    }

    /// A tiny random decoder with linear weights large enough that 4-bit rounding matters.
    static func tinyModel(seed: UInt64) -> TrainableDecoder {
        let model = TrainableDecoder(config: tinyConfig(), seed: seed)
        var rng = SeededRNG(seed: seed + 1)
        for p in model.linearWeights { rng.fillNormal(p.value, std: 0.3) }
        return model
    }

    // MARK: - STE forward

    func testSTEForwardMatchesHandCheckedValuesWithShortLastGroup() throws {
        // 2 x 5, 2-bit (codes 0...3), groups of 3: columns [0, 3) and the short group [3, 5).
        let w = Self.matrix("m.weight", rows: 2, cols: 5, values: [-1, 2, 0.5, 1.5, 3,
                                                                   -3, 3, 1.25, -0.75, -1.5])
        let fq = try FakeQuantizer(scheme: QuantScheme(weightBits: 2, groupSize: 3), mode: .ste, weights: [w])
        // Row 0, group 0: range -1...2, scale 1, zero 1: -1 -> 0, 2 -> 3, 0.5 -> round-half-even 0 -> code 1.
        // Row 0, group 1: range 0...3 (includes 0), scale 1, zero 0: 1.5 -> 2, 3 -> 3.
        // Row 1, group 0: range -3...3, scale 2, zero round(1.5) = 2: -3/2 = -1.5 -> -2 -> code 0 -> -4;
        //   3/2 = 1.5 -> 2 -> code 4, clamped to 3 -> 2; 1.25/2 = 0.625 -> 1 -> code 3 -> 2.
        // Row 1, group 1: range -1.5...0, scale 0.5, zero 3: -1.5 -> -2 -> code 1 -> -1; -3 -> code 0 -> -1.5.
        let expected: [Float] = [-1, 2, 0, 2, 3,
                                 -4, 2, 2, -1, -1.5]
        let out = Tensor(shape: [2, 5])
        fq.forwardWeight(of: w, into: out.ptr)
        XCTAssertEqual(out.array, expected)
        let grid = fq.grid(of: "m.weight")   // (groups, rows)
        XCTAssertEqual(grid.scales, [1, 2, 1, 0.5])
        XCTAssertEqual(grid.zeros, [1, 2, 0, 3])
        XCTAssertEqual(Self.rtn(w.value, groupSize: 3, bits: 2, symmetric: false).values, expected)

        // STE backward: the one clamped entry (row 1, column 1) gets no gradient; others pass
        // through, added to what the gradient held.
        w.grad.fill(0.5)
        let d: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        fq.backward(of: w, dQuantized: d)
        XCTAssertEqual(w.grad.array, [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 0.5, 8.5, 9.5, 10.5])
        XCTAssertTrue(fq.parameters.isEmpty)
    }

    func testSTEForwardEqualsRTNAndBackwardMasksExactlyTheClampedCodes() throws {
        for symmetric in [false, true] {
            for (bits, group) in [(4, 16), (3, 16), (2, 7)] {
                let w = Self.randomMatrix("x.weight", rows: 9, cols: 40, seed: UInt64(bits * 10 + group))
                let scheme = QuantScheme(weightBits: bits, groupSize: group, symmetric: symmetric)
                let fq = try FakeQuantizer(scheme: scheme, mode: .ste, weights: [w])
                let (expected, clamped) = Self.rtn(w.value, groupSize: group, bits: bits, symmetric: symmetric)
                let out = Tensor(shape: w.value.shape)
                fq.forwardWeight(of: w, into: out.ptr)
                XCTAssertEqual(out.array, expected, "\(scheme)")
                // Symmetric grids clamp (at least) each group's largest positive weight when it is the
                // largest magnitude; asymmetric min/max grids clamp almost nothing.
                if symmetric { XCTAssertGreaterThan(clamped.filter { $0 }.count, 0, "\(scheme)") }
                var rng = SeededRNG(seed: 5)
                let d = (0..<w.value.count).map { _ in rng.normal() }
                fq.backward(of: w, dQuantized: d)
                for i in 0..<d.count {
                    XCTAssertEqual(w.grad.ptr[i], clamped[i] ? 0 : d[i], "\(scheme) entry \(i)")
                }
            }
        }
        // One group per row without a group size.
        let w = Self.randomMatrix("y.weight", rows: 3, cols: 20, seed: 9)
        let fq = try FakeQuantizer(scheme: QuantScheme(weightBits: 4), mode: .ste, weights: [w])
        let out = Tensor(shape: w.value.shape)
        fq.forwardWeight(of: w, into: out.ptr)
        XCTAssertEqual(out.array, Self.rtn(w.value, groupSize: 20, bits: 4, symmetric: false).values)
        XCTAssertEqual(fq.grid(of: "y.weight").scales.count, 3)
    }

    // MARK: - LSQ gradients

    /// The LSQ surrogate in Double: round(w/s) replaced by w/s + R with R = round(w0/s0) - w0/s0
    /// frozen at the base point (the straight-through estimator); loss = sum c * w_q.
    static func surrogateLoss(w: [Double], s: [Double], z: [Double], residual: [Double], c: [Double],
                              rows: Int, cols: Int, group: Int, maxCode: Double) -> Double {
        var total = 0.0
        for r in 0..<rows {
            for j in 0..<cols {
                let k = (j / group) * rows + r, i = r * cols + j
                let q = min(max(w[i] / s[k] + residual[i] + z[k], 0), maxCode)
                total += c[i] * s[k] * (q - z[k])
            }
        }
        return total
    }

    func testLSQGradientsMatchFiniteDifferencesOfTheSurrogate() throws {
        let rows = 3, cols = 10, group = 4, bits = 3
        let maxCode = Double((1 << bits) - 1)
        let groups = 3  // 4 + 4 + 2
        var rng = SeededRNG(seed: 11)
        // Scales 0.2...0.3, zeros with fraction .3 so no code sits on a clamp limit; weights chosen
        // away from rounding boundaries (|frac(w/s) - 0.5| > 0.1), some beyond the grid's ends.
        var scales = [Float](), zeros = [Float]()
        for _ in 0..<(groups * rows) {
            scales.append(0.2 + 0.1 * rng.uniform())
            zeros.append(Float(Int(rng.next() % 6) + 1) + 0.3)
        }
        var values = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for j in 0..<cols {
                let s = scales[(j / group) * rows + r]
                var code: Float
                repeat {
                    code = -6 + 14 * rng.uniform()  // w/s in -6...8: clamps both ends for some zeros
                } while abs(code - code.rounded(.down) - 0.5) < 0.1
                values[r * cols + j] = code * s
            }
        }
        let w = Self.matrix("l.weight", rows: rows, cols: cols, values: values)
        let fq = try FakeQuantizer(scheme: QuantScheme(weightBits: bits, groupSize: group), mode: .lsq, weights: [w],
                                   initialGrids: ["l.weight": .init(scales: scales, zeros: zeros)], gradientScale: false)
        XCTAssertEqual(fq.parameters.map(\.name), ["l.weight_scale", "l.weight_zero"])
        XCTAssertEqual(fq.parameters.map(\.value.shape), [[groups, rows], [groups, rows]])
        let scaleP = fq.parameters[0], zeroP = fq.parameters[1]

        let c = (0..<(rows * cols)).map { _ in Double(rng.normal()) }
        fq.backward(of: w, dQuantized: c.map(Float.init))

        let wd = values.map(Double.init), sd = scales.map(Double.init), zd = zeros.map(Double.init)
        var residual = [Double](repeating: 0, count: wd.count)
        var clampedCount = 0
        for r in 0..<rows {
            for j in 0..<cols {
                let i = r * cols + j, k = (j / group) * rows + r
                let x = wd[i] / sd[k]
                residual[i] = x.rounded(.toNearestOrEven) - x
                let u = x.rounded(.toNearestOrEven) + zd[k]
                if u < 0 || u > maxCode { clampedCount += 1 }
            }
        }
        XCTAssertGreaterThan(clampedCount, 2, "the test needs clamped entries")
        XCTAssertLessThan(clampedCount, rows * cols - 5, "the test needs in-range entries")

        // The forward equals the surrogate at the base point.
        let out = Tensor(shape: [rows, cols])
        fq.forwardWeight(of: w, into: out.ptr)
        var forwardLoss = 0.0
        for i in 0..<c.count { forwardLoss += c[i] * Double(out.ptr[i]) }
        let f0 = Self.surrogateLoss(w: wd, s: sd, z: zd, residual: residual, c: c, rows: rows, cols: cols,
                                    group: group, maxCode: maxCode)
        XCTAssertEqual(forwardLoss, f0, accuracy: 1e-5)

        func central(_ eval: (Double) -> Double, _ h: Double) -> Double { (eval(h) - eval(-h)) / (2 * h) }
        let h = 1e-5
        for i in 0..<wd.count {
            let fd = central({ e in
                var w2 = wd; w2[i] += e
                return Self.surrogateLoss(w: w2, s: sd, z: zd, residual: residual, c: c, rows: rows, cols: cols,
                                          group: group, maxCode: maxCode)
            }, h)
            XCTAssertEqual(Double(w.grad.ptr[i]), fd, accuracy: 1e-4 * max(1, abs(fd)), "dw[\(i)]")
        }
        var zeroGradients = 0
        for k in 0..<(groups * rows) {
            let fdS = central({ e in
                var s2 = sd; s2[k] += e
                return Self.surrogateLoss(w: wd, s: s2, z: zd, residual: residual, c: c, rows: rows, cols: cols,
                                          group: group, maxCode: maxCode)
            }, h)
            let fdZ = central({ e in
                var z2 = zd; z2[k] += e
                return Self.surrogateLoss(w: wd, s: sd, z: z2, residual: residual, c: c, rows: rows, cols: cols,
                                          group: group, maxCode: maxCode)
            }, h)
            XCTAssertEqual(Double(scaleP.grad.ptr[k]), fdS, accuracy: 1e-4 * max(1, abs(fdS)), "ds[\(k)]")
            XCTAssertEqual(Double(zeroP.grad.ptr[k]), fdZ, accuracy: 1e-4 * max(1, abs(fdZ)), "dz[\(k)]")
            if fdZ != 0 { zeroGradients += 1 }
        }
        XCTAssertGreaterThan(zeroGradients, 0, "some group must have clamped entries")

        // LSQ's gradient scale: the same gradients times 1 / sqrt(N * Qp), N = 4, 4, then 2 (short group).
        let unscaledS = scaleP.grad.array, unscaledZ = zeroP.grad.array
        fq.gradientScale = true
        scaleP.zeroGrad(); zeroP.zeroGrad(); w.zeroGrad()
        fq.backward(of: w, dQuantized: c.map(Float.init))
        for k in 0..<(groups * rows) {
            let n = Float(k / rows < 2 ? 4 : 2)
            let factor = 1 / (n * Float(maxCode)).squareRoot()
            XCTAssertEqual(scaleP.grad.ptr[k], unscaledS[k] * factor, accuracy: 1e-6 * max(1, abs(unscaledS[k])))
            XCTAssertEqual(zeroP.grad.ptr[k], unscaledZ[k] * factor, accuracy: 1e-6 * max(1, abs(unscaledZ[k])))
        }
    }

    func testLSQStartsFromTheMinMaxGridAndSymmetricZerosAreFixed() throws {
        let w = Self.randomMatrix("a.weight", rows: 5, cols: 24, seed: 3)
        for symmetric in [false, true] {
            let scheme = QuantScheme(weightBits: 4, groupSize: 16, symmetric: symmetric)
            let ste = try FakeQuantizer(scheme: scheme, mode: .ste, weights: [w])
            let lsq = try FakeQuantizer(scheme: scheme, mode: .lsq, weights: [w])
            XCTAssertEqual(ste.grid(of: "a.weight").scales, lsq.grid(of: "a.weight").scales)
            XCTAssertEqual(ste.grid(of: "a.weight").zeros, lsq.grid(of: "a.weight").zeros)
            XCTAssertEqual(lsq.parameters.map(\.name), symmetric ? ["a.weight_scale"] : ["a.weight_scale", "a.weight_zero"])
        }
        XCTAssertThrowsError(try FakeQuantizer(scheme: QuantScheme(weightBits: 4, groupSize: 16), mode: .lsq, weights: [w],
                                               initialGrids: ["a.weight": .init(scales: [1, 2], zeros: [0, 0])]))
        XCTAssertThrowsError(try FakeQuantizer(scheme: QuantScheme(weightBits: nil, activationBits: 8), mode: .ste, weights: [w]))
    }

    // MARK: - In the decoder

    func testDecoderWithQuantizerEqualsDecoderWithFakeQuantizedWeights() throws {
        let tokens = [3, 17, 5, 60, 2, 9, 41, 8, 33, 1, 0, 12]
        let batch = 2, length = 6
        let targets = tokens.enumerated().map { i, _ in i % length == length - 1 ? 0 : tokens[i + 1] }
        let weights = (0..<tokens.count).map { Float($0 % length == length - 1 ? 0 : 1) }
        for mode in [FakeQuantizer.Mode.ste, .lsq] {
            let quantized = Self.tinyModel(seed: 42), reference = Self.tinyModel(seed: 42)
            let fq = try FakeQuantizer(decoder: quantized, scheme: try QuantScheme.parse("w4g16"), mode: mode)
            quantized.weightQuantizer = fq
            XCTAssertEqual(fq.weightNames.count, 2 * 7)
            var clampedByName: [String: [Bool]] = [:]
            for p in reference.linearWeights {
                let (values, clamped) = Self.rtn(p.value, groupSize: 16, bits: 4, symmetric: false)
                values.withUnsafeBufferPointer { p.value.ptr.update(from: $0.baseAddress!, count: values.count) }
                clampedByName[p.name] = clamped
            }
            let a = quantized.forward(tokens: tokens, batch: batch, length: length).copy()
            let b = reference.forward(tokens: tokens, batch: batch, length: length).copy()
            var maxDiff: Float = 0
            for i in 0..<a.count { maxDiff = max(maxDiff, abs(a.ptr[i] - b.ptr[i])) }
            XCTAssertLessThanOrEqual(maxDiff, 1e-5, "\(mode)")
            // And they differ from the unquantized model.
            let plain = Self.tinyModel(seed: 42).forward(tokens: tokens, batch: batch, length: length)
            var plainDiff: Float = 0
            for i in 0..<a.count { plainDiff = max(plainDiff, abs(a.ptr[i] - plain.ptr[i])) }
            XCTAssertGreaterThan(plainDiff, 1e-3)

            // Gradients: the quantized model's weight gradient is the reference's (= dL/dW_q)
            // where the code was not clamped; everything else matches.
            for (model, logits) in [(quantized, a), (reference, b)] {
                model.zeroGradients()
                _ = CrossEntropy.forwardBackward(logits: logits.ptr, vocab: 64, targets: targets, weights: weights,
                                                 normalizer: 10, gradient: logits.ptr)
                model.backward(dLogits: logits)
            }
            for (pq, pr) in zip(quantized.parameters, reference.parameters) {
                let clamped = clampedByName[pq.name]
                for i in 0..<pq.grad.count {
                    // (LSQ starts from the same min/max grid, so the same entries are clamped.)
                    let expected = clamped?[i] == true ? 0 : pr.grad.ptr[i]
                    XCTAssertEqual(pq.grad.ptr[i], expected, accuracy: 1e-5 + 1e-4 * abs(expected), "\(mode) \(pq.name)[\(i)]")
                }
            }
            if mode == .lsq {
                let nonzero = fq.parameters.filter { $0.name.hasSuffix("_scale") }.map { p in p.grad.array.contains { $0 != 0 } }
                XCTAssertTrue(nonzero.allSatisfy { $0 }, "every step size gets a gradient")
            }
        }
    }

    func testQuantizedWeightsAreCachedUntilRefresh() throws {
        let model = Self.tinyModel(seed: 8)
        let fq = try FakeQuantizer(decoder: model, scheme: QuantScheme(weightBits: 4, groupSize: 16), mode: .ste)
        model.weightQuantizer = fq
        let tokens = [1, 2, 3, 4, 5, 6, 7, 8]
        let first = model.forward(tokens: tokens, batch: 1, length: 8).array
        // Move every linear weight: without a refresh (a second micro-batch) nothing changes.
        for p in model.linearWeights { for i in 0..<p.value.count { p.value.ptr[i] *= 1.7 } }
        XCTAssertEqual(model.forward(tokens: tokens, batch: 1, length: 8).array, first)
        fq.refresh()
        XCTAssertNotEqual(model.forward(tokens: tokens, batch: 1, length: 8).array, first)
        // Removing the quantizer gives the plain model back.
        model.weightQuantizer = nil
        let plain = model.forward(tokens: tokens, batch: 1, length: 8).array
        let copy = Self.tinyModel(seed: 8)
        for p in copy.linearWeights { for i in 0..<p.value.count { p.value.ptr[i] *= 1.7 } }
        XCTAssertEqual(copy.forward(tokens: tokens, batch: 1, length: 8).array, plain)
    }

    func testTrainingStepsLowerTheLossInBothModes() throws {
        var rng = SeededRNG(seed: 21)
        let batch = 2, length = 16
        let tokens = (0..<(batch * length)).map { _ in Int(rng.next() % 64) }
        let targets = tokens.enumerated().map { i, _ in i % length == length - 1 ? 0 : tokens[i + 1] }
        let weights = (0..<tokens.count).map { Float($0 % length == length - 1 ? 0 : 1) }
        let predicted = Double(weights.reduce(0, +))
        for mode in [FakeQuantizer.Mode.ste, .lsq] {
            let model = Self.tinyModel(seed: 4)
            let fq = try FakeQuantizer(decoder: model, scheme: QuantScheme(weightBits: 4, groupSize: 16), mode: mode)
            model.weightQuantizer = fq
            let rule = WeightDecayRule(exclude: ["embed_tokens", "norm"] + FakeQuantizer.decayExclusions)
            let optimizer = AdamW(parameters: model.parameters + fq.parameters, weightDecay: 0.01, decayRule: rule)
            XCTAssertTrue(fq.parameters.allSatisfy { !optimizer.decayed.contains($0.name) })
            let scalesBefore = fq.grid(of: "model.layers.0.mlp.down_proj.weight").scales
            var losses: [Double] = []
            for _ in 0..<20 {
                let logits = model.forward(tokens: tokens, batch: batch, length: length)
                let loss = CrossEntropy.forwardBackward(logits: logits.ptr, vocab: 64, targets: targets, weights: weights,
                                                        normalizer: predicted, gradient: logits.ptr)
                model.backward(dLogits: logits)
                optimizer.step(lr: 3e-3)
                optimizer.zeroGrad()
                fq.refresh()
                losses.append(loss)
            }
            XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(mode) \(losses)")
            XCTAssertLessThan(losses.last!, 0.8 * losses.first!, "\(mode) \(losses)")
            let scalesAfter = fq.grid(of: "model.layers.0.mlp.down_proj.weight").scales
            XCTAssertNotEqual(scalesAfter, scalesBefore, "\(mode): the grid follows the weights / is learned")
        }
    }
}
