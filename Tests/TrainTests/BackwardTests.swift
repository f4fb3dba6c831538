import Foundation
import XCTest
import Formats
import Model
import Tensors
import TestSupport
import Train

/// The training forward/backward (`TrainableDecoder`, `TrainLayers`): gradients against
/// PyTorch (scripts/make-reference.py, group `grads`), against central finite differences,
/// and the training forward's logits against the inference `Decoder`.
final class BackwardTests: XCTestCase {

    // MARK: - Helpers

    /// Next-token targets and weights for (B, T) tokens: row b*T+t predicts tokens[b*T+t+1];
    /// the last position of each sequence predicts nothing. `mask[b][t]` for t < T-1.
    static func targets(tokens: [Int], batch: Int, length: Int, mask: [[Int]]) -> (targets: [Int], weights: [Float]) {
        var targets = [Int](repeating: 0, count: batch * length)
        var weights = [Float](repeating: 0, count: batch * length)
        for b in 0..<batch {
            for t in 0..<(length - 1) where mask[b][t] != 0 {
                targets[b * length + t] = tokens[b * length + t + 1]
                weights[b * length + t] = 1
            }
        }
        return (targets, weights)
    }

    /// Forward, masked mean cross-entropy and backward; returns the loss.
    @discardableResult
    static func lossAndGradients(_ model: TrainableDecoder, tokens: [Int], batch: Int, length: Int,
                                 mask: [[Int]]) -> Double {
        let (targets, weights) = targets(tokens: tokens, batch: batch, length: length, mask: mask)
        let count = Double(weights.reduce(0, +))
        let logits = model.forward(tokens: tokens, batch: batch, length: length)
        let dLogits = Tensor(shape: logits.shape)
        let loss = CrossEntropy.forwardBackward(logits: logits.ptr, vocab: model.config.vocabSize, targets: targets,
                                                weights: weights, normalizer: count, gradient: dLogits.ptr)
        model.backward(dLogits: dLogits)
        return loss
    }

    /// The same loss from a forward only, log-softmax in Double (for finite differences).
    static func loss(_ model: TrainableDecoder, tokens: [Int], batch: Int, length: Int, mask: [[Int]]) -> Double {
        let (targets, weights) = targets(tokens: tokens, batch: batch, length: length, mask: mask)
        let v = model.config.vocabSize
        let logits = model.forward(tokens: tokens, batch: batch, length: length)
        var total = 0.0, count = 0.0
        for r in 0..<targets.count where weights[r] > 0 {
            let z = logits.row(r)
            var m = -Double.infinity
            for j in 0..<v { m = max(m, Double(z[j])) }
            var s = 0.0
            for j in 0..<v { s += exp(Double(z[j]) - m) }
            total += m + log(s) - Double(z[targets[r]])
            count += 1
        }
        return total / count
    }

    static func norm(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
        var s = 0.0
        for i in 0..<n { s += Double(p[i]) * Double(p[i]) }
        return s.squareRoot()
    }

    // MARK: - 1. Gradients against PyTorch

    struct GradReference: Decodable {
        struct Grad: Decodable { let shape: [Int]; let values: [Float] }
        struct Case: Decodable {
            let input_ids: [[Int]]
            let mask: [[Int]]
            let loss: Double
            let grads: [String: Grad]
        }
        let qwen3: Case
        let llama: Case
    }

    static let gradReference: GradReference? = try? TestPaths.loadJSON(GradReference.self, fixture: "grad-reference.json")

    func checkAgainstReference(_ name: String, _ ref: GradReference.Case) throws {
        let checkpoint = try Checkpoint.open(TestPaths.fixture(name).path)
        let model = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
        XCTAssertEqual(Set(model.parameters.map(\.name)), Set(ref.grads.keys), "\(name): parameter names differ from PyTorch's")

        let batch = ref.input_ids.count, length = ref.input_ids[0].count
        let tokens = ref.input_ids.flatMap { $0 }
        let loss = Self.lossAndGradients(model, tokens: tokens, batch: batch, length: length, mask: ref.mask)
        let lossError = abs(loss - ref.loss) / abs(ref.loss)
        XCTAssertLessThan(lossError, 1e-5, "\(name): loss \(loss) vs PyTorch \(ref.loss)")

        var worst = (name: "", error: 0.0)
        for p in model.parameters {
            guard let g = ref.grads[p.name] else { continue }
            XCTAssertEqual(p.grad.shape, g.shape, "\(name): \(p.name) shape")
            guard g.values.count == p.grad.count else { continue }
            var diff = 0.0, norm = 0.0
            for i in 0..<g.values.count {
                let d = Double(p.grad.ptr[i]) - Double(g.values[i])
                diff += d * d
                norm += Double(g.values[i]) * Double(g.values[i])
            }
            let rel = (diff / max(norm, 1e-300)).squareRoot()
            if rel > worst.error || rel.isNaN { worst = (p.name, rel) }
            XCTAssertLessThan(rel, 1e-4, "\(name): gradient of \(p.name) differs by \(rel) relative (||ref|| = \(norm.squareRoot()))")
        }
        print("\(name): loss \(loss) (PyTorch \(ref.loss), rel \(lossError)); worst gradient \(worst.name) at \(worst.error) relative")

        // Gradients accumulate: a second identical backward doubles them.
        let before = model.parameters.map { $0.grad.copy() }
        Self.lossAndGradients(model, tokens: tokens, batch: batch, length: length, mask: ref.mask)
        for (p, g) in zip(model.parameters, before) {
            var diff = 0.0
            for i in 0..<g.count { diff = max(diff, abs(Double(p.grad.ptr[i]) - 2 * Double(g.ptr[i]))) }
            XCTAssertLessThan(diff, 1e-6 + 1e-5 * Self.norm(g.ptr, g.count), "\(p.name): backward does not accumulate")
        }
    }

    func testQwen3GradientsMatchPyTorch() throws {
        let ref = try XCTUnwrap(Self.gradReference, "Tests/Fixtures/grad-reference.json missing: run scripts/make-reference.py --only grads")
        try checkAgainstReference("grad-qwen3", ref.qwen3)
    }

    func testLlamaGradientsMatchPyTorch() throws {
        let ref = try XCTUnwrap(Self.gradReference, "Tests/Fixtures/grad-reference.json missing: run scripts/make-reference.py --only grads")
        try checkAgainstReference("grad-llama", ref.llama)
    }

    func testLoadingChecksShapes() throws {
        let checkpoint = try Checkpoint.open(TestPaths.fixture("grad-qwen3").path)
        var config = checkpoint.config
        config.intermediateSize += 1
        XCTAssertThrowsError(try TrainableDecoder(config: config, source: checkpoint.weights)) { error in
            XCTAssertTrue(error is FormatError, "\(error)")
            XCTAssertTrue("\(error)".contains("mlp.gate_proj.weight"), "\(error)")
        }
    }

    // MARK: - 2. Finite differences

    /// A tiny model with weights large enough for clear finite differences.
    static func tinyModel(_ family: ModelConfig.Family, tied: Bool, seed: UInt64) -> TrainableDecoder {
        let config = ModelConfig(modelType: family, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2,
                                 numAttentionHeads: 2, numKeyValueHeads: 1, headDim: 8, vocabSize: 20,
                                 rmsNormEps: 1e-6, ropeTheta: 100, tieWordEmbeddings: tied)
        let model = TrainableDecoder(config: config, seed: seed)
        var rng = SeededRNG(seed: seed + 1)
        for p in model.parameters {
            let isNorm = p.name.hasSuffix("norm.weight")
            for i in 0..<p.value.count {
                p.value.ptr[i] = isNorm ? 1 + 0.3 * rng.normal() : 0.4 * rng.normal()
            }
        }
        return model
    }

    func checkFiniteDifferences(_ model: TrainableDecoder, names: [String]) {
        let batch = 2, length = 5
        var rng = SeededRNG(seed: 77)
        let tokens = (0..<(batch * length)).map { _ in Int(rng.next() % UInt64(model.config.vocabSize)) }
        let mask = [[0, 1, 1, 1], [1, 1, 0, 1]]
        model.zeroGradients()
        Self.lossAndGradients(model, tokens: tokens, batch: batch, length: length, mask: mask)
        let eps: Float = 1e-2
        var checked = 0
        for name in names {
            guard let p = model.parameter(name) else { XCTFail("no parameter \(name)"); continue }
            // A few spread-out entries of each tensor.
            let picks = Set([0, p.value.count / 3, p.value.count / 2 + 1, p.value.count - 1])
            for i in picks.sorted() {
                let numeric = Self.centralDifference(p.value, at: i, eps: eps) {
                    Self.loss(model, tokens: tokens, batch: batch, length: length, mask: mask)
                }
                let analytic = Double(p.grad.ptr[i])
                let tolerance = 2e-4 + 1e-2 * max(abs(numeric), abs(analytic))
                XCTAssertLessThan(abs(numeric - analytic), tolerance, "\(name)[\(i)]: analytic \(analytic), numeric \(numeric)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 20)
    }

    func testQwen3FiniteDifferences() {
        let model = Self.tinyModel(.qwen3, tied: false, seed: 5)
        let l = "model.layers.0.", m = "model.layers.1."
        checkFiniteDifferences(model, names: [
            l + "self_attn.q_norm.weight", l + "self_attn.k_norm.weight", m + "self_attn.q_norm.weight",
            l + "self_attn.q_proj.weight", l + "self_attn.k_proj.weight", l + "self_attn.v_proj.weight",
            l + "self_attn.o_proj.weight", m + "self_attn.k_proj.weight",
            l + "input_layernorm.weight", l + "post_attention_layernorm.weight", "model.norm.weight",
            l + "mlp.gate_proj.weight", l + "mlp.up_proj.weight", m + "mlp.down_proj.weight",
            "model.embed_tokens.weight", "lm_head.weight",
        ])
    }

    func testQwen2FiniteDifferences() {
        // Biases, no q/k norm, tied embeddings.
        let model = Self.tinyModel(.qwen2, tied: true, seed: 9)
        let l = "model.layers.0."
        checkFiniteDifferences(model, names: [
            l + "self_attn.q_proj.weight", l + "self_attn.q_proj.bias", l + "self_attn.k_proj.bias",
            l + "self_attn.v_proj.bias", l + "self_attn.k_proj.weight", "model.layers.1.input_layernorm.weight",
            "model.embed_tokens.weight",
        ])
    }

    /// Fills a buffer with N(0, std^2) values.
    static func random(_ count: Int, _ rng: inout SeededRNG, std: Float = 1) -> Tensor {
        let t = Tensor(shape: [count])
        rng.fillNormal(t, std: std)
        return t
    }

    /// sum(a * b) in Double.
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
        var s = 0.0
        for i in 0..<n { s += Double(a[i]) * Double(b[i]) }
        return s
    }

    /// Central differences of `loss` with respect to every entry of `x` (or `limit` of them).
    static func numericGradient(_ x: Tensor, eps: Float = 1e-2, loss: () -> Double) -> [Double] {
        (0..<x.count).map { centralDifference(x, at: $0, eps: eps, loss: loss) }
    }

    /// d loss / d x[i] by central differences (the step as actually represented in Float).
    static func centralDifference(_ x: Tensor, at i: Int, eps: Float, loss: () -> Double) -> Double {
        let saved = x.ptr[i]
        x.ptr[i] = saved + eps
        let plus = loss()
        x.ptr[i] = saved - eps
        let minus = loss()
        x.ptr[i] = saved
        return (plus - minus) / (Double(saved + eps) - Double(saved - eps))
    }

    func assertClose(_ analytic: UnsafePointer<Float>, _ numeric: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        var worst = 0.0
        for (i, n) in numeric.enumerated() {
            let a = Double(analytic[i])
            let err = abs(a - n) / (2e-3 + max(abs(a), abs(n)))
            worst = max(worst, err)
            if err > 1e-2 { XCTFail("\(what)[\(i)]: analytic \(a), numeric \(n)", file: file, line: line); return }
        }
        XCTAssertLessThan(worst, 1e-2, what, file: file, line: line)
    }

    /// RoPE + causal GQA attention in isolation: dL/dq, dL/dk, dL/dv for L = sum(out * R).
    func testAttentionLayerFiniteDifferences() {
        let batch = 2, length = 5, heads = 2, kvHeads = 1, d = 8
        let n = batch * length, qw = heads * d, kvw = kvHeads * d
        var rng = SeededRNG(seed: 3)
        let q = Self.random(n * qw, &rng), k = Self.random(n * kvw, &rng), v = Self.random(n * kvw, &rng)
        let r = Self.random(n * qw, &rng)
        let rope = RoPE(headDim: d, theta: 100)
        rope.reserve(length)
        var cosValues: [Float] = [], sinValues: [Float] = []
        for t in 0..<length {
            for i in 0..<(d / 2) {
                let angle = Double(t) * pow(100, -Double(2 * i) / Double(d))
                cosValues.append(Float(cos(angle)))
                sinValues.append(Float(sin(angle)))
            }
        }
        let cosT = Tensor(shape: [length, d / 2], values: cosValues), sinT = Tensor(shape: [length, d / 2], values: sinValues)
        let shape = TrainLayers.AttentionShape(batch: batch, length: length, heads: heads, kvHeads: kvHeads, headDim: d)
        let probs = Tensor(shape: [shape.probsCount]), out = Tensor(shape: [n * qw])
        let qr = Tensor(shape: [n * qw]), kr = Tensor(shape: [n * kvw])

        func forward() {
            qr.ptr.update(from: q.ptr, count: q.count)
            kr.ptr.update(from: k.ptr, count: k.count)
            TrainLayers.ropeForward(x: qr.ptr, ldx: qw, rows: n, groups: heads, dim: d, length: length, cos: cosT.ptr, sin: sinT.ptr)
            TrainLayers.ropeForward(x: kr.ptr, ldx: kvw, rows: n, groups: kvHeads, dim: d, length: length, cos: cosT.ptr, sin: sinT.ptr)
            TrainLayers.attentionForward(q: qr.ptr, ldq: qw, k: kr.ptr, ldk: kvw, v: v.ptr, ldv: kvw, probs: probs.ptr,
                                         out: out.ptr, ldo: qw, shape: shape)
        }
        func loss() -> Double { forward(); return Self.dot(out.ptr, r.ptr, out.count) }

        forward()
        // Causal: probabilities above the diagonal are zero and rows sum to one.
        for row in 0..<(batch * heads * length) {
            let i = row % length
            var sum: Float = 0
            for j in 0..<length { sum += probs.ptr[row * length + j]; if j > i { XCTAssertEqual(probs.ptr[row * length + j], 0) } }
            XCTAssertEqual(sum, 1, accuracy: 1e-5)
        }
        let dq = Tensor(shape: [n * qw]), dk = Tensor(shape: [n * kvw]), dv = Tensor(shape: [n * kvw])
        let scratch = Tensor(shape: [shape.probsCount])
        TrainLayers.attentionBackward(dout: r.ptr, lddo: qw, q: qr.ptr, ldq: qw, k: kr.ptr, ldk: kvw, v: v.ptr, ldv: kvw,
                                      probs: probs.ptr, dq: dq.ptr, lddq: qw, dk: dk.ptr, lddk: kvw, dv: dv.ptr, lddv: kvw,
                                      scratch: scratch.ptr, shape: shape)
        TrainLayers.ropeBackward(dx: dq.ptr, ldx: qw, rows: n, groups: heads, dim: d, length: length, cos: cosT.ptr, sin: sinT.ptr)
        TrainLayers.ropeBackward(dx: dk.ptr, ldx: kvw, rows: n, groups: kvHeads, dim: d, length: length, cos: cosT.ptr, sin: sinT.ptr)

        assertClose(dq.ptr, Self.numericGradient(q, loss: loss), "dL/dq")
        assertClose(dk.ptr, Self.numericGradient(k, loss: loss), "dL/dk")
        assertClose(dv.ptr, Self.numericGradient(v, loss: loss), "dL/dv")
    }

    /// A sequence longer than the attention's query blocks (64 rows): forward against a naive
    /// Double implementation, backward against finite differences at positions in every block.
    func testAttentionAcrossQueryBlocks() {
        let batch = 2, length = 150, heads = 2, kvHeads = 1, d = 8
        let n = batch * length, qw = heads * d, kvw = kvHeads * d
        var rng = SeededRNG(seed: 8)
        let q = Self.random(n * qw, &rng), k = Self.random(n * kvw, &rng), v = Self.random(n * kvw, &rng)
        let r = Self.random(n * qw, &rng)
        let shape = TrainLayers.AttentionShape(batch: batch, length: length, heads: heads, kvHeads: kvHeads, headDim: d)
        let probs = Tensor(shape: [shape.probsCount]), out = Tensor(shape: [n * qw])
        func loss() -> Double {
            TrainLayers.attentionForward(q: q.ptr, ldq: qw, k: k.ptr, ldk: kvw, v: v.ptr, ldv: kvw, probs: probs.ptr,
                                         out: out.ptr, ldo: qw, shape: shape)
            return Self.dot(out.ptr, r.ptr, out.count)
        }
        _ = loss()
        var worst = 0.0
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<length {
                    let qi = q.ptr + (b * length + i) * qw + h * d
                    var scores = [Double](repeating: 0, count: i + 1)
                    for j in 0...i {
                        let kj = k.ptr + (b * length + j) * kvw
                        var s = 0.0
                        for e in 0..<d { s += Double(qi[e]) * Double(kj[e]) }
                        scores[j] = s / Double(d).squareRoot()
                    }
                    let m = scores.max()!
                    let z = scores.reduce(0) { $0 + exp($1 - m) }
                    for e in 0..<d {
                        var o = 0.0
                        for j in 0...i { o += exp(scores[j] - m) / z * Double(v.ptr[(b * length + j) * kvw + e]) }
                        worst = max(worst, abs(o - Double(out.ptr[(b * length + i) * qw + h * d + e])))
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5, "attention output differs from the naive reference")

        let dq = Tensor(shape: [n * qw]), dk = Tensor(shape: [n * kvw]), dv = Tensor(shape: [n * kvw])
        let scratch = Tensor(shape: [shape.probsCount])
        TrainLayers.attentionBackward(dout: r.ptr, lddo: qw, q: q.ptr, ldq: qw, k: k.ptr, ldk: kvw, v: v.ptr, ldv: kvw,
                                      probs: probs.ptr, dq: dq.ptr, lddq: qw, dk: dk.ptr, lddk: kvw, dv: dv.ptr, lddv: kvw,
                                      scratch: scratch.ptr, shape: shape)
        let eps: Float = 1e-2
        for (x, dx, width) in [(q, dq, qw), (k, dk, kvw), (v, dv, kvw)] {
            for (b, t) in [(0, 3), (0, 70), (0, 140), (1, 64), (1, 128), (1, 149)] {
                for e in [0, width - 1] {
                    let i = (b * length + t) * width + e
                    let numeric = Self.centralDifference(x, at: i, eps: eps, loss: loss)
                    let analytic = Double(dx.ptr[i])
                    XCTAssertLessThan(abs(numeric - analytic), 2e-3 + 1e-2 * abs(numeric), "row \(b * length + t) entry \(e): analytic \(analytic), numeric \(numeric)")
                }
            }
        }
    }

    /// RMSNorm (whole rows, and per-head groups in place as for Qwen3's q/k norms): dL/dx, dL/dw.
    func testRMSNormLayerFiniteDifferences() {
        let n = 6, groups = 2, dim = 8, width = groups * dim
        var rng = SeededRNG(seed: 4)
        for grouped in [false, true] {
            let g = grouped ? groups : 1, dm = grouped ? dim : width
            let x = Self.random(n * width, &rng), w = Self.random(dm, &rng, std: 0.3)
            for i in 0..<dm { w.ptr[i] += 1 }
            let r = Self.random(n * width, &rng)
            let y = Tensor(shape: [n * width]), rstd = Tensor(shape: [n * g])
            func loss() -> Double {
                TrainLayers.rmsNormForward(x: x.ptr, ldx: width, w: w.ptr, y: y.ptr, ldy: width, rstd: rstd.ptr,
                                           rows: n, groups: g, dim: dm, eps: 1e-6)
                return Self.dot(y.ptr, r.ptr, y.count)
            }
            _ = loss()
            let dw = Tensor(shape: [dm])
            let dx: Tensor
            if grouped {
                dx = r.copy()  // in place, as the model does for q/k norms
                TrainLayers.rmsNormBackward(dy: dx.ptr, lddy: width, x: x.ptr, ldx: width, w: w.ptr, rstd: rstd.ptr,
                                            dx: dx.ptr, lddx: width, accumulate: false, dw: dw.ptr,
                                            rows: n, groups: g, dim: dm)
            } else {
                dx = Tensor(shape: [n * width])
                dx.fill(0.5)  // accumulate onto an existing gradient
                TrainLayers.rmsNormBackward(dy: r.ptr, lddy: width, x: x.ptr, ldx: width, w: w.ptr, rstd: rstd.ptr,
                                            dx: dx.ptr, lddx: width, accumulate: true, dw: dw.ptr,
                                            rows: n, groups: g, dim: dm)
                for i in 0..<dx.count { dx.ptr[i] -= 0.5 }
            }
            assertClose(dx.ptr, Self.numericGradient(x, loss: loss), "RMSNorm dL/dx (grouped: \(grouped))")
            assertClose(dw.ptr, Self.numericGradient(w, loss: loss), "RMSNorm dL/dw (grouped: \(grouped))")
        }
    }

    /// SwiGLU in isolation.
    func testSwiGLUFiniteDifferences() {
        let n = 3, f = 5
        var rng = SeededRNG(seed: 6)
        let gu = Self.random(n * 2 * f, &rng, std: 2), r = Self.random(n * f, &rng)
        let out = Tensor(shape: [n * f])
        func loss() -> Double {
            TrainLayers.swigluForward(gateUp: gu.ptr, out: out.ptr, rows: n, width: f)
            return Self.dot(out.ptr, r.ptr, out.count)
        }
        let dgu = Tensor(shape: [n * 2 * f])
        TrainLayers.swigluBackward(gateUp: gu.ptr, dout: r.ptr, dGateUp: dgu.ptr, rows: n, width: f)
        assertClose(dgu.ptr, Self.numericGradient(gu, eps: 1e-3, loss: loss), "SwiGLU dL/d(gate, up)")
    }

    // MARK: - 3. Training forward = inference forward

    func checkLogitsMatchDecoder(_ name: String, batch: Int, length: Int) throws {
        let checkpoint = try Checkpoint.open(TestPaths.fixture(name).path)
        let model = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
        let decoder = Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
        let v = checkpoint.config.vocabSize
        var rng = SeededRNG(seed: 12)
        let tokens = (0..<(batch * length)).map { _ in Int(rng.next() % UInt64(v)) }
        let logits = model.forward(tokens: tokens, batch: batch, length: length)
        XCTAssertEqual(logits.shape, [batch * length, v])
        var worst: Float = 0
        for b in 0..<batch {
            let cache = decoder.makeCache(capacities: [length])
            let ids = Array(tokens[(b * length)..<((b + 1) * length)])
            let ref = decoder.forward([SequenceChunk(sequence: 0, tokens: ids)], cache: cache, allLogits: true)
            for t in 0..<length {
                for j in 0..<v { worst = max(worst, abs(logits.row(b * length + t)[j] - ref.row(t)[j])) }
            }
        }
        XCTAssertLessThan(worst, 1e-4, "\(name): training logits differ from the inference decoder by \(worst)")
        XCTAssertEqual(model.activationStoreBytes, model.activationBytes(batch: batch, length: length))
    }

    // Length 70 crosses the attention's 64-row query blocks.
    func testQwen3LogitsMatchInferenceDecoder() throws { try checkLogitsMatchDecoder("tiny-qwen3", batch: 2, length: 70) }
    func testQwen2LogitsMatchInferenceDecoder() throws { try checkLogitsMatchDecoder("tiny-qwen2", batch: 3, length: 11) }
}
