import Foundation
import XCTest
import Formats
@testable import Model
@testable import Quant
import Tensors
import TestSupport

/// FlatQuant's transform x → x diag(s)(L ⊗ R) and its weight side W P⁻ᵀ: values against the
/// explicit matrix, gradients against finite differences, the model's function kept by the
/// folded transforms in both decoders, and block calibration lowering the quantized block's error.
final class FlatQuantTests: XCTestCase {
    /// A transform of width a b near the identity (well conditioned, not trivial).
    static func randomTransform(a: Int, b: Int, seed: UInt64, spread: Float = 0.2, name: String = "t") throws -> FlatQuantTransform {
        var rng = SeededRNG(seed: seed)
        let l = Tensor(shape: [a, a]), r = Tensor(shape: [b, b]), s = Tensor(shape: [a * b])
        rng.fillNormal(l, std: spread); rng.fillNormal(r, std: spread)
        for i in 0..<a { l.ptr[i * a + i] += 1 }
        for i in 0..<b { r.ptr[i * b + i] += 1 }
        for i in 0..<s.count { s.ptr[i] = 1 + spread * rng.normal() }
        return try FlatQuantTransform(left: l, right: r, scale: s, name: name)
    }

    /// P = diag(s)(L ⊗ R) as an explicit (n, n) matrix.
    static func explicitMatrix(_ t: FlatQuantTransform) -> [Float] {
        let n = t.width, a = t.factors.a, b = t.factors.b, l = t.left.value.ptr, r = t.right.value.ptr
        // P[k, j] = s[k] L[k / b, j / b] R[k % b, j % b]
        return (0..<n * n).map { e in
            let k = e / n, j = e % n
            return t.scale.value.ptr[k] * l[(k / b) * a + j / b] * r[(k % b) * b + j % b]
        }
    }

    static func tensor(_ rows: Int, _ cols: Int, _ rng: inout SeededRNG) -> Tensor {
        let t = Tensor(shape: [rows, cols])
        rng.fillNormal(t)
        return t
    }

    func testForwardIsXTimesPAndTheWeightSideKeepsTheProduct() throws {
        let t = try Self.randomTransform(a: 3, b: 4, seed: 1)
        var rng = SeededRNG(seed: 2)
        let rows = 5, n = 12, outs = 6
        let x = Self.tensor(rows, n, &rng), w = Self.tensor(outs, n, &rng)
        let y = Tensor(shape: [rows, n])
        t.forward(x.ptr, into: y.ptr, rows: rows, width: n)
        let p = Self.explicitMatrix(t)
        for r in 0..<rows {
            for j in 0..<n {
                var want = 0.0
                for k in 0..<n { want += Double(x.ptr[r * n + k]) * Double(p[k * n + j]) }
                XCTAssertEqual(Double(y.ptr[r * n + j]), want, accuracy: 1e-4 * max(1, abs(want)))
            }
        }
        // (x P)(W P⁻ᵀ)ᵀ = x Wᵀ
        let wt = Tensor(shape: [outs, n])
        t.transformWeight(w.ptr, into: wt.ptr, rows: outs)
        for r in 0..<rows {
            for o in 0..<outs {
                var got = 0.0, want = 0.0
                for k in 0..<n {
                    got += Double(y.ptr[r * n + k]) * Double(wt.ptr[o * n + k])
                    want += Double(x.ptr[r * n + k]) * Double(w.ptr[o * n + k])
                }
                XCTAssertEqual(got, want, accuracy: 1e-4 * max(1, abs(want)))
            }
        }
    }

    /// Perturbs each entry of each parameter and compares the central difference of `loss` with
    /// the analytic gradient the parameters hold.
    func checkGradients(_ params: [Parameter], eps: Float, tolerance: Double, loss: () -> Double, file: StaticString = #filePath, line: UInt = #line) {
        for p in params {
            let analytic = p.grad.array
            for i in 0..<p.value.count {
                let v = p.value.ptr[i]
                p.value.ptr[i] = v + eps
                let up = loss()
                p.value.ptr[i] = v - eps
                let down = loss()
                p.value.ptr[i] = v
                let numeric = (up - down) / Double(2 * eps)
                XCTAssertEqual(Double(analytic[i]), numeric, accuracy: tolerance * max(1, abs(numeric)), "\(p.name)[\(i)]", file: file, line: line)
            }
        }
    }

    func testActivationSideGradients() throws {
        let t = try Self.randomTransform(a: 2, b: 3, seed: 4)
        var rng = SeededRNG(seed: 5)
        let rows = 4, n = 6
        let x = Parameter(name: "x", value: Self.tensor(rows, n, &rng)), g = Self.tensor(rows, n, &rng)
        let y = Tensor(shape: [rows, n])
        func loss() -> Double {
            t.forward(x.value.ptr, into: y.ptr, rows: rows, width: n)
            return (0..<y.count).reduce(0) { $0 + Double(y.ptr[$1]) * Double(g.ptr[$1]) }
        }
        for p in t.parameters { p.zeroGrad() }
        _ = loss()
        t.backward(x: x.value.ptr, dy: g.ptr, dx: x.grad.ptr, rows: rows, width: n)
        checkGradients(t.parameters + [x], eps: 1e-2, tolerance: 2e-3, loss: loss)
    }

    /// The weight side goes through the inverse, so the loss is not linear in L and R: smaller
    /// steps and a looser tolerance.
    func testWeightSideGradientsThroughTheInverse() throws {
        let t = try Self.randomTransform(a: 2, b: 3, seed: 6)
        var rng = SeededRNG(seed: 7)
        let outs = 4, n = 6
        let w = Parameter(name: "w", value: Self.tensor(outs, n, &rng)), g = Self.tensor(outs, n, &rng)
        let out = Tensor(shape: [outs, n])
        func loss() -> Double {
            try! t.refreshInverse()
            t.transformWeight(w.value.ptr, into: out.ptr, rows: outs)
            return (0..<out.count).reduce(0) { $0 + Double(out.ptr[$1]) * Double(g.ptr[$1]) }
        }
        for p in t.parameters + [w] { p.zeroGrad() }
        _ = loss()
        t.weightBackward(w.value.ptr, dTransformed: g.ptr, rows: outs, dWeight: w.grad.ptr)
        checkGradients(t.parameters + [w], eps: 2e-3, tolerance: 1e-2, loss: loss)
    }

    /// The learned clip's gradient is the straight-through one (LSQ's): with the rounded codes held,
    /// x̂ = s(c) round(x / s(c)) inside the range and s(c) (q_clamped - z) outside. Its sign is
    /// checked against that surrogate by finite differences, and gradient descent on it must
    /// lower the quantization error of outlier-heavy rows by clipping.
    func testLearnableClipGradientAndDescent() throws {
        var rng = SeededRNG(seed: 8)
        let rows = 6, width = 32
        let x = Tensor(shape: [rows, width])
        rng.fillNormal(x)
        for r in 0..<rows { x.ptr[r * width + r] = 12 }   // one outlier per row
        let clip = LearnableClipQuantizer(bits: 4, initialLogit: 3, name: "clip")
        let y = Tensor(shape: x.shape), dy = Tensor(shape: x.shape), dx = Tensor(shape: x.shape)
        func error() -> Double {
            clip.forward(x.ptr, into: y.ptr, rows: rows, width: width)
            return (0..<x.count).reduce(0) { $0 + Double((y.ptr[$1] - x.ptr[$1]) * (y.ptr[$1] - x.ptr[$1])) }
        }
        // Surrogate with codes frozen at the current c: finite differences of Σ dy x̂(c).
        _ = error()
        for i in 0..<x.count { dy.ptr[i] = 2 * (y.ptr[i] - x.ptr[i]) }
        clip.logit.zeroGrad()
        clip.backward(x: x.ptr, dy: dy.ptr, dx: dx.ptr, rows: rows, width: width)
        let analytic = Double(clip.logit.grad.ptr[0])
        let q = clip.quantizer
        func surrogate(_ logit: Float) -> Double {
            let c = 1 / (1 + expf(-logit))
            var sum = 0.0
            for r in 0..<rows {
                let row = x.ptr + r * width
                guard let g0 = q.grid(row, width) else { continue }
                let scale = g0.scale / q.clipRatio * c   // the grid's scale is linear in c
                for j in 0..<width {
                    let u0 = row[j] / g0.scale, code = u0.rounded(.toNearestOrEven) + g0.zero
                    let xhat: Float
                    if code < g0.lowCode { xhat = scale * (g0.lowCode - g0.zero) }
                    else if code > g0.highCode { xhat = scale * (g0.highCode - g0.zero) }
                    else { xhat = scale * (u0.rounded(.toNearestOrEven) - u0) + row[j] }   // round(u) frozen, u = x / s
                    sum += Double(dy.ptr[r * width + j] * xhat)
                }
            }
            return sum
        }
        let l0 = clip.logit.value.ptr[0], eps: Float = 1e-3
        let numeric = (surrogate(l0 + eps) - surrogate(l0 - eps)) / Double(2 * eps)
        XCTAssertEqual(analytic, numeric, accuracy: 1e-2 * max(1, abs(numeric)))

        // From a clip ratio of 0.5, far too tight for these rows, descent on the gradient opens
        // the range and lowers the error.
        clip.logit.value.ptr[0] = 0
        let before = error()
        for _ in 0..<200 {
            _ = error()
            for i in 0..<x.count { dy.ptr[i] = 2 * (y.ptr[i] - x.ptr[i]) }
            clip.logit.zeroGrad()
            clip.backward(x: x.ptr, dy: dy.ptr, dx: dx.ptr, rows: rows, width: width)
            clip.logit.value.ptr[0] -= 0.002 * clip.logit.grad.ptr[0]
        }
        XCTAssertGreaterThan(clip.clipRatio, 0.6, "the range opens")
        XCTAssertLessThan(error(), 0.5 * before, "and the error falls")
    }

    // MARK: - The model's function

    /// Blocks whose transforms are the identity, or random and well conditioned.
    static func blocks(for config: ModelConfig, random: Bool) throws -> [FlatQuantBlock] {
        try (0..<config.numHiddenLayers).map { l in
            let block = try FlatQuantBlock(layer: l, config: config, activation: nil, headTransforms: random)
            if random {
                for (i, t) in (LinearSite.allCases.map { block.transforms[$0]! } + [block.keyTransform!, block.valueTransform!]).enumerated() {
                    // Off-diagonal spread ~ 1/sqrt(size): as well conditioned at 48 as at 8.
                    let r = try randomTransform(a: t.factors.a, b: t.factors.b, seed: UInt64(10 * l + i),
                                                spread: 0.5 / Float(max(t.factors.a, t.factors.b)).squareRoot())
                    for (mine, theirs) in zip(t.parameters, r.parameters) { mine.value.ptr.update(from: theirs.value.ptr, count: theirs.value.count) }
                    try t.refreshInverse()
                }
            }
            return block
        }
    }

    func testFoldedTransformsKeepTheLogitsOfBothDecoders() throws {
        let tokens = [3, 17, 42, 5, 77, 0, 23, 61]
        for family in ModelConfig.Family.allCases {
            for random in [false, true] {
                let original = try QuaRotTests.tinyWeights(family, seed: 7)
                let blocks = try Self.blocks(for: original.config, random: random)
                let folded = try FlatQuant.transformedWeights(original, blocks: blocks)
                let before = QuaRotTests.logits(original, tokens), after = QuaRotTests.logits(folded, tokens)
                XCTAssertLessThan(QuaRotTests.relativeDifference(before, after), 1e-4, "\(family) inference, random \(random)")
                if random {
                    XCTAssertGreaterThan(QuaRotTests.maxAbsDifference(original.layers[0].down.weight.dense, folded.layers[0].down.weight.dense), 1e-2)
                }

                // The training decoder: folded weights, the transforms as trainable input transforms.
                var tensors = QuaRot.namedCopies(folded)
                for block in blocks { for (name, t) in block.savedTensors { tensors[name] = t } }
                let plain = try TrainableDecoder(config: original.config, source: InMemoryWeights(QuaRot.namedCopies(original)))
                let trainable = try TrainableDecoder(config: original.config, source: InMemoryWeights(tensors))
                for block in blocks {
                    for site in LinearSite.allCases { trainable.inputTransforms[LinearSiteKey(layer: block.layer, site: site)] = block.transforms[site]! }
                    trainable.keyTransforms[block.layer] = block.keyTransform
                    trainable.valueTransforms[block.layer] = block.valueTransform
                }
                if random {
                    XCTAssertNotNil(folded.layers[0].keyTransform, "the inference decoder runs the key transform")
                    XCTAssertNotNil(folded.layers[0].valueTransform, "and the value transform")
                }
                let want = Tensor(shape: [tokens.count, original.config.vocabSize], values: Array(plain.forward(tokens: tokens, batch: 1, length: tokens.count).buffer))
                let got = trainable.forward(tokens: tokens, batch: 1, length: tokens.count)
                XCTAssertLessThan(QuaRotTests.relativeDifference(want, got), 1e-4, "\(family) training, random \(random)")
            }
        }
    }

    /// SmolLM2 with FlatQuant's transforms folded in, identity and random (well conditioned, as
    /// trained ones are), without quantization: the unquantized model's logits.
    func testSmolLM2KeepsItsLogitsWithFoldedTransforms() throws {
        _ = try TestPaths.require(TestPaths.smolLM2GGUF)
        let checkpoint = try Checkpoint.open(TestPaths.smolLM2GGUF.path)
        let original = try DecoderWeights(config: checkpoint.config, source: checkpoint.weights)
        let tokens = [1, 9690, 28, 2683, 314, 260, 3575, 30]
        let before = QuaRotTests.logits(original, tokens)
        for random in [false, true] {
            let blocks = try Self.blocks(for: original.config, random: random)
            let folded = try FlatQuant.transformedWeights(original, blocks: blocks)
            let rel = QuaRotTests.relativeDifference(before, QuaRotTests.logits(folded, tokens))
            print("FlatQuant SmolLM2 (random \(random)): max relative logit difference \(rel)")
            XCTAssertLessThan(rel, 1e-4, "random \(random)")
        }
    }

    /// With a weight grid too fine to matter (16 bits, no clipping, the clamp at the grid's ends
    /// passed through) the block's function does not depend on the transforms, so the gradient
    /// through the activation side and the one through the weight side must cancel, while each
    /// alone is large: a check of the two paths composed in the training decoder.
    func testTransformGradientsCancelWhenQuantizationIsExact() throws {
        for family in ModelConfig.Family.allCases {
            let weights = try QuaRotTests.tinyWeights(family, seed: 3)
            var config = weights.config
            config.numHiddenLayers = 1
            let decoder = try TrainableDecoder(config: config, source: InMemoryWeights(QuaRot.namedCopies(weights)))
            for p in decoder.parameters { p.frozen = true }
            let block = try Self.blocks(for: config, random: true)[0]
            block.install(on: decoder, index: 0)
            for p in block.weightClips.values { p.value.fill(30) }   // clip ratio 1
            var rng = SeededRNG(seed: 12)
            let x = Tensor(shape: [16, 48]), dOut = Tensor(shape: [16, 48])
            rng.fillNormal(x); rng.fillNormal(dOut)
            func gradients(weightSide: Bool) -> [Float] {
                if weightSide {
                    let q = FlatQuantWeightQuantizer(decoder: decoder, blocks: [(0, block)], scheme: QuantScheme(weightBits: 16))
                    q.passesClampedGradients = true
                    decoder.weightQuantizer = q
                } else {
                    decoder.weightQuantizer = nil
                }
                for p in block.transformParameters + block.clipParameters { p.zeroGrad() }
                _ = decoder.forwardBlocks(input: x.ptr, batch: 2, length: 8)
                _ = decoder.backwardBlocks(dOutput: dOut.ptr)
                return block.transformParameters.flatMap(\.grad.array)
            }
            let norm = { (g: [Float]) in g.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
            let activationOnly = norm(gradients(weightSide: false)), both = norm(gradients(weightSide: true))
            XCTAssertGreaterThan(activationOnly, 1)
            XCTAssertLessThan(both, 1e-3 * activationOnly, "\(family): activation side alone \(activationOnly), both sides \(both)")
        }
    }

    /// The head transforms' gradients in the training decoder. The key transform (k → k P,
    /// q → q P⁻ᵀ) leaves every score, so the unquantized block's function, unchanged: the
    /// block's output and input gradient equal the plain block's (both backward paths through
    /// it), and P's gradients from the query and the key side cancel. With a fixed mixing of the
    /// cached keys and values after it the block does depend on P, and the value transform
    /// (v → v P, o's weight left as it is here) always does: their gradients then match central
    /// differences. (`testTransformGradientsCancelWhenQuantizationIsExact` checks the value
    /// transform against its weight side.)
    func testHeadTransformGradients() throws {
        let norm = { (g: [Float]) in g.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
        for family in ModelConfig.Family.allCases {
            let weights = try QuaRotTests.tinyWeights(family, seed: 5)
            var config = weights.config
            config.numHiddenLayers = 1
            let decoder = try TrainableDecoder(config: config, source: InMemoryWeights(QuaRot.namedCopies(weights)))
            for p in decoder.parameters { p.frozen = true }
            let factors = KroneckerFactors.balanced(config.headDim)
            let key = try Self.randomTransform(a: factors.a, b: factors.b, seed: 21, spread: 0.3, name: "k")
            let value = try Self.randomTransform(a: factors.a, b: factors.b, seed: 23, spread: 0.3, name: "v")
            var rng = SeededRNG(seed: 13)
            let x = Tensor(shape: [16, config.hiddenSize]), dOut = Tensor(shape: [16, config.hiddenSize])
            rng.fillNormal(x); rng.fillNormal(dOut)
            func run() -> (output: Tensor, dInput: Tensor) {
                for p in key.parameters + value.parameters { p.zeroGrad() }
                let y = decoder.forwardBlocks(input: x.ptr, batch: 2, length: 8)
                let out = Tensor(shape: y.shape, values: y.array)
                let dx = decoder.backwardBlocks(dOutput: dOut.ptr)
                return (out, Tensor(shape: dx.shape, values: dx.array))
            }
            let plain = run()
            decoder.keyTransforms = [0: key]
            let transformed = run()
            XCTAssertLessThan(QuaRotTests.relativeDifference(plain.output, transformed.output), 1e-4, "\(family) output")
            XCTAssertLessThan(QuaRotTests.relativeDifference(plain.dInput, transformed.dInput), 1e-4, "\(family) input gradient")
            let cancelled = norm(key.parameters.flatMap(\.grad.array))

            func checkAgainstCentralDifferences(_ t: FlatQuantTransform, _ what: String) throws -> [Float] {
                _ = run()
                let analytic = t.parameters.flatMap(\.grad.array)
                func loss() -> Double {
                    let y = decoder.forwardBlocks(input: x.ptr, batch: 2, length: 8)
                    return (0..<y.count).reduce(0) { $0 + Double(y.ptr[$1]) * Double(dOut.ptr[$1]) }
                }
                var numeric: [Float] = []
                let eps: Float = 1e-3   // 1e-2 is past the loss's curvature in a few entries
                for p in t.parameters {
                    for e in 0..<p.value.count {
                        let saved = p.value.ptr[e]
                        p.value.ptr[e] = saved + eps; try t.refreshInverse(); let up = loss()
                        p.value.ptr[e] = saved - eps; try t.refreshInverse(); let down = loss()
                        p.value.ptr[e] = saved; try t.refreshInverse()
                        numeric.append(Float((up - down) / (2 * Double(eps))))
                    }
                }
                let difference = norm(zip(analytic, numeric).map { $0 - $1 })
                XCTAssertLessThan(difference, 2e-2 * norm(numeric), "\(family) \(what): |analytic - numeric| \(difference), |numeric| \(norm(numeric))")
                return analytic
            }
            let kvFactors = KroneckerFactors.balanced(2 * config.numKeyValueHeads * config.headDim)
            decoder.cacheTransforms[0] = try Self.randomTransform(a: kvFactors.a, b: kvFactors.b, seed: 22, spread: 0.3, name: "kv")
            let keyGradient = try checkAgainstCentralDifferences(key, "key transform after a K|V mixing")
            XCTAssertLessThan(cancelled, 1e-3 * norm(keyGradient), "\(family): the query and key sides cancel without the mixing")
            decoder.cacheTransforms = [:]
            decoder.keyTransforms = [:]
            decoder.valueTransforms = [0: value]
            _ = try checkAgainstCentralDifferences(value, "value transform")
            decoder.valueTransforms = [:]
        }
    }

    /// The starts of L and R: P = diag(s)(L ⊗ R) is orthogonal at the random orthogonal and the
    /// Hadamard start (P = H_n/√n there: L and R orthogonal with entries ±1/√order), and a factor
    /// order without a Hadamard matrix is refused.
    func testStartingFactors() throws {
        func isOrthogonal(_ m: [Float], _ n: Int) -> Bool {
            let p = SmallMatrix.product(m, SmallMatrix.transposed(m, size: n), size: n)
            return (0..<n * n).allSatisfy { abs(p[$0] - ($0 % (n + 1) == 0 ? 1 : 0)) < 1e-4 }
        }
        for (start, n) in [(FlatQuantTransform.Start.orthogonal, 48), (.orthogonal, 1536), (.hadamard, 576), (.hadamard, 1536), (.identity, 12)] {
            var rng = SeededRNG(seed: 3)
            let t = try FlatQuantTransform(width: n, name: "t", start: start, rng: &rng)
            XCTAssertEqual(t.scale.value.array, [Float](repeating: 1, count: n))
            for (factor, order) in [(t.left, t.factors.a), (t.right, t.factors.b)] {
                XCTAssertTrue(isOrthogonal(factor.value.array, order), "\(start) \(n): \(factor.name)")
                if start == .hadamard {
                    XCTAssertEqual(Set(factor.value.array.map { ($0 * Float(order).squareRoot()).rounded() }), [-1, 1], "entries ±1/√\(order)")
                }
            }
            if n == 48 { XCTAssertTrue(isOrthogonal(Self.explicitMatrix(t), n), "P itself") }
        }
        var rng = SeededRNG(seed: 3)
        XCTAssertThrowsError(try FlatQuantTransform(width: 36, name: "t", start: .hadamard, rng: &rng), "36 = 6 x 6 and no Hadamard of order 6") { error in
            XCTAssertTrue("\(error)".contains("order 6"), "\(error)")
        }
    }

    func testCalibrationNeverRaisesABlocksErrorAndLowersTheOutlierBlocks() throws {
        let weights = try QuaRotTests.tinyWeights(.llama, seed: 3)
        // Two outlier channels in the residual stream, as real models have: what A4 per token
        // cannot take and a learned transform can spread.
        for t in 0..<weights.config.vocabSize { weights.embedding.ptr[t * 48 + 5] *= 20; weights.embedding.ptr[t * 48 + 30] *= 12 }
        var rng = SeededRNG(seed: 4)
        let sequences = (0..<4).map { _ in (0..<16).map { _ in Int(rng.next() % 80) } }
        let scheme = try QuantScheme.parse("w4a4kv4")
        func calibrate(smooth: Bool, lr: Double, start: FlatQuantTransform.Start = .identity, epochs: Int = 30, seed: UInt64 = 0) throws -> (blocks: [FlatQuantBlock], reports: [FlatQuant.BlockReport]) {
            var settings = FlatQuant.Settings()
            settings.samples = 4; settings.length = 16; settings.epochs = epochs; settings.batchSequences = 2
            settings.learningRate = lr
            settings.factorStart = start
            settings.seed = seed
            if !smooth { settings.smoothAlpha = nil }
            return try FlatQuant.calibrate(config: weights.config, source: InMemoryWeights(QuaRot.namedCopies(weights)),
                                           sequences: sequences, scheme: scheme, settings: settings) { _ in }
        }
        let identityStart = try calibrate(smooth: false, lr: 5e-3)
        // A random rotation spreads the outlier channels before any training: whatever the draw.
        let rotated = try (0..<4).map { try calibrate(smooth: false, lr: 5e-3, start: .orthogonal, epochs: 1, seed: $0).reports[0].mseBefore }
        let identityMSE = identityStart.reports[0].mseBefore
        for mse in rotated { XCTAssertLessThan(mse, identityMSE, "orthogonal start \(rotated), identity \(identityMSE)") }
        XCTAssertLessThan(rotated.reduce(0, +) / Double(rotated.count), 0.9 * identityMSE, "orthogonal start \(rotated), identity \(identityMSE)")
        XCTAssertEqual(FlatQuant.Settings().factorStart, .orthogonal, "FlatQuant's start is the default")
        let (blocks, reports) = try calibrate(smooth: true, lr: 5e-3)
        XCTAssertEqual(blocks.count, 2)
        XCTAssertEqual(reports.map(\.steps), [60, 60])
        // The SmoothQuant start already takes the outlier channels' error down.
        XCTAssertLessThan(reports[0].mseBefore, 0.95 * identityStart.reports[0].mseBefore)
        for r in reports + identityStart.reports {
            XCTAssertLessThanOrEqual(r.mseAfter, r.mseBefore, "block \(r.layer): never worse than the start")
        }
        // From the identity, block 0 (the outlier channels straight from the embeddings) trains down.
        XCTAssertLessThan(identityStart.reports[0].mseAfter, 0.95 * identityStart.reports[0].mseBefore, "\(identityStart.reports[0])")
        XCTAssertFalse(identityStart.reports[0].keptInitial)
        let left = identityStart.blocks[0].transforms[.qkv]!.left.value
        XCTAssertGreaterThan((0..<left.count).map { abs(left.ptr[$0] - ($0 % (left.shape[0] + 1) == 0 ? 1 : 0)) }.max()!, 1e-4, "L moved off the identity")
    }

    func testCalibratingFromALaterBlockGivesThatBlockWhatTheWholeCalibrationDoes() throws {
        let weights = try QuaRotTests.tinyWeights(.llama, seed: 3)
        var rng = SeededRNG(seed: 5)
        let sequences = (0..<4).map { _ in (0..<16).map { _ in Int(rng.next() % 80) } }
        let scheme = try QuantScheme.parse("w4a4kv4")
        func calibrate(from first: Int?) throws -> (blocks: [FlatQuantBlock], reports: [FlatQuant.BlockReport]) {
            var settings = FlatQuant.Settings()
            settings.samples = 4; settings.length = 16; settings.epochs = 3; settings.batchSequences = 2
            settings.firstBlock = first
            return try FlatQuant.calibrate(config: weights.config, source: InMemoryWeights(QuaRot.namedCopies(weights)),
                                           sequences: sequences, scheme: scheme, settings: settings) { _ in }
        }
        let whole = try calibrate(from: nil), last = try calibrate(from: 1)
        XCTAssertEqual(whole.reports.map(\.layer), [0, 1])
        XCTAssertEqual(last.reports.map(\.layer), [1])
        XCTAssertEqual(last.blocks.map(\.layer), [1])
        // Each block trains on full-precision inputs, so block 1 alone is block 1 of the whole run.
        XCTAssertEqual(last.reports[0].mseBefore, whole.reports[1].mseBefore)
        XCTAssertEqual(last.reports[0].mseAfter, whole.reports[1].mseAfter)
        XCTAssertThrowsError(try calibrate(from: 2)) { XCTAssertTrue("\($0)".contains("first block 2"), "\($0)") }
    }
}
