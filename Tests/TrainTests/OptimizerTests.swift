import Foundation
import XCTest
import Formats
import Tensors
import TestSupport
@testable import Train

/// grad-reference.json (llama section) and grad-adamw.json, written by scripts/make-reference.py.
private struct GradReference: Decodable {
    struct Entry: Decodable { let shape: [Int]; let values: [Float] }
    struct Model: Decodable { let grads: [String: Entry] }
    let llama: Model
}

private struct AdamWReference: Decodable {
    struct A: Decodable {
        let lr: Double
        let betas: [Double]
        let eps: Double
        let weight_decay: Double
        let max_grad_norm: Double
        let decay_params: [String]
        let total_norm_before_clip: Double
        let clip_coef: Double
        let updated: [String: [Float]]
        let updated_step2: [String: [Float]]
    }
    let adamw: A
}

final class OptimizerTests: XCTestCase {
    // MARK: AdamW against torch

    /// Two steps of torch.optim.AdamW with clip_grad_norm_ on the grad-llama model, from the
    /// recorded gradients: every updated parameter agrees to 1e-5 relative.
    func testMatchesTorchAdamWWithClipping() throws {
        let grads = try TestPaths.loadJSON(GradReference.self, fixture: "grad-reference.json").llama.grads
        let ref = try TestPaths.loadJSON(AdamWReference.self, fixture: "grad-adamw.json").adamw
        let file = try SafeTensorsFile(url: TestPaths.fixture("grad-llama/model.safetensors"))
        let params = try file.tensorNames.map { Parameter(name: $0, value: try file.tensor($0)) }
        XCTAssertEqual(Set(params.map(\.name)), Set(grads.keys))
        XCTAssertEqual(params.count, 21)

        let opt = AdamW(parameters: params, beta1: ref.betas[0], beta2: ref.betas[1], eps: ref.eps,
                        weightDecay: ref.weight_decay)
        // The default rule picks exactly torch's decay group (linear weights incl. lm_head).
        XCTAssertEqual(opt.decayed, Set(ref.decay_params))

        func loadGrads() {
            for p in params {
                let g = grads[p.name]!
                XCTAssertEqual(g.shape, p.value.shape, p.name)
                p.grad.ptr.update(from: g.values, count: g.values.count)
            }
        }
        let rawQ = grads["model.layers.0.self_attn.q_proj.weight"]!.values

        for (k, want) in [(1, ref.updated), (2, ref.updated_step2)] {
            loadGrads()
            XCTAssertFalse(Gradients.hasNonFinite(params))
            let norm = Gradients.clipGlobalNorm(params, maxNorm: ref.max_grad_norm)
            XCTAssertEqual(norm, ref.total_norm_before_clip, accuracy: 1e-6 * ref.total_norm_before_clip)
            let q = params.first { $0.name == "model.layers.0.self_attn.q_proj.weight" }!
            for i in stride(from: 0, to: rawQ.count, by: 97) {
                XCTAssertEqual(Double(q.grad.ptr[i]), Double(rawQ[i]) * ref.clip_coef, accuracy: 1e-6 * abs(Double(rawQ[i])) + 1e-12)
            }
            opt.step(lr: ref.lr)
            XCTAssertEqual(opt.stepCount, k)
            var worst = 0.0, worstName = ""
            for p in params {
                let expected = want[p.name]!
                XCTAssertEqual(expected.count, p.value.count, p.name)
                for i in 0..<p.value.count {
                    // Relative, with a floor far below one step's size (lr = 1e-3) so values near
                    // zero do not demand more digits than the fixture's 7.
                    let err = abs(Double(p.value.ptr[i]) - Double(expected[i])) / max(abs(Double(expected[i])), 1e-3)
                    if err > worst { worst = err; worstName = "\(p.name)[\(i)]" }
                }
            }
            XCTAssertLessThan(worst, 1e-5, "step \(k): worst relative error at \(worstName)")
            opt.zeroGrad()
            XCTAssertEqual(q.grad.ptr[0], 0)
        }
    }

    // MARK: AdamW by hand

    /// Two steps worked out by hand (see the Python one-liner in the comment) with different
    /// gradients, so bias correction, the moment updates and decoupled decay are each visible.
    func testHandComputedSteps() {
        // Reference (float64, PyTorch's formula):
        //   step 1: p = [0.890000002, -1.880000004], m = [0.05, -0.025], v = [2.5e-4, 6.25e-5]
        //   step 2 (g = [1, 0]): p = [0.7845818006, -1.7941941823], m = [0.145, -0.0225], v = [1.24975e-3, 6.24375e-5]
        let w = Parameter(name: "model.layers.0.mlp.up_proj.weight", value: Tensor(shape: [1, 2], values: [1, -2]))
        let norm = Parameter(name: "model.norm.weight", value: Tensor(shape: [1], values: [2]))
        let frozen = Parameter(name: "model.layers.0.mlp.down_proj.weight", value: Tensor(shape: [1, 1], values: [3]))
        frozen.frozen = true
        let opt = AdamW(parameters: [w, norm, frozen], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1)
        XCTAssertEqual(opt.decayed, [w.name, frozen.name])
        XCTAssertNil(opt.moments[frozen.name])

        w.grad.ptr[0] = 0.5; w.grad.ptr[1] = -0.25
        norm.grad.ptr[0] = 1
        frozen.grad.ptr[0] = 100
        opt.step(lr: 0.1)
        XCTAssertEqual(w.value.array[0], 0.890000002, accuracy: 1e-6)
        XCTAssertEqual(w.value.array[1], -1.880000004, accuracy: 1e-6)
        // No decay on the norm: 2 - 0.1 * 1 / (1 + eps).
        XCTAssertEqual(norm.value.array[0], 1.9, accuracy: 1e-6)
        XCTAssertEqual(frozen.value.array[0], 3)
        XCTAssertEqual(opt.moments[w.name]!.m.array[0], 0.05, accuracy: 1e-8)
        XCTAssertEqual(opt.moments[w.name]!.v.array[1], 6.25e-5, accuracy: 1e-10)

        opt.zeroGrad()
        XCTAssertEqual(w.grad.array, [0, 0])
        w.grad.ptr[0] = 1
        opt.step(lr: 0.1)
        XCTAssertEqual(w.value.array[0], 0.7845818006, accuracy: 1e-6)
        XCTAssertEqual(w.value.array[1], -1.7941941823, accuracy: 1e-6)
        XCTAssertEqual(opt.moments[w.name]!.m.array[0], 0.145, accuracy: 1e-7)
        XCTAssertEqual(opt.moments[w.name]!.m.array[1], -0.0225, accuracy: 1e-8)
        XCTAssertEqual(opt.moments[w.name]!.v.array[0], 1.24975e-3, accuracy: 1e-9)
        XCTAssertEqual(frozen.value.array[0], 3)
        XCTAssertEqual(opt.stepCount, 2)
    }

    /// A large tensor goes through the multi-threaded path and must equal the serial result.
    func testLargeTensorMatchesSmallOnes() {
        let n = 100_003
        var rng = SeededRNG(seed: 7)
        let big = Parameter(name: "big.weight", value: Tensor(shape: [n, 1]))
        rng.fillNormal(big.value)
        rng.fillNormal(big.grad)
        // The same values as many small parameters (serial path).
        let pieces = stride(from: 0, to: n, by: 1000).map { lo -> Parameter in
            let hi = min(n, lo + 1000)
            let p = Parameter(name: "p\(lo).weight", value: Tensor(shape: [hi - lo, 1], values: Array(big.value.array[lo..<hi])))
            p.grad.ptr.update(from: big.grad.ptr + lo, count: hi - lo)
            return p
        }
        let a = AdamW(parameters: [big], weightDecay: 0.1), b = AdamW(parameters: pieces, weightDecay: 0.1)
        for _ in 0..<3 { a.step(lr: 1e-2); b.step(lr: 1e-2) }
        XCTAssertEqual(big.value.array, pieces.flatMap(\.value.array))
    }

    // MARK: Gradients

    func testClipGlobalNorm() {
        let a = Parameter(name: "a", value: Tensor(shape: [2]))
        let b = Parameter(name: "b", value: Tensor(shape: [1]))
        let f = Parameter(name: "f", value: Tensor(shape: [1]))
        f.frozen = true
        a.grad.ptr[0] = 3; a.grad.ptr[1] = 0; b.grad.ptr[0] = -4; f.grad.ptr[0] = 1000
        XCTAssertEqual(Gradients.globalNorm([a, b, f]), 5)  // the frozen grad does not count

        // Under the limit: untouched.
        XCTAssertEqual(Gradients.clipGlobalNorm([a, b, f], maxNorm: 10), 5)
        XCTAssertEqual(a.grad.array + b.grad.array, [3, 0, -4])

        // Over: scaled by 1 / (5 + 1e-6), returning the norm before clipping.
        XCTAssertEqual(Gradients.clipGlobalNorm([a, b, f], maxNorm: 1), 5)
        let s = 1 / (5 + 1e-6)
        XCTAssertEqual(Double(a.grad.ptr[0]), 3 * s, accuracy: 1e-7)
        XCTAssertEqual(Double(b.grad.ptr[0]), -4 * s, accuracy: 1e-7)
        XCTAssertEqual(f.grad.ptr[0], 1000)
        XCTAssertEqual(Gradients.globalNorm([a, b]), 1, accuracy: 1e-6)
    }

    func testHasNonFinite() {
        let a = Parameter(name: "a", value: Tensor(shape: [5]))
        XCTAssertFalse(Gradients.hasNonFinite([a]))
        a.grad.ptr[1] = -0.0; a.grad.ptr[2] = 3e38
        XCTAssertFalse(Gradients.hasNonFinite([a]))
        for bad in [Float.nan, .infinity, -.infinity] {
            a.grad.ptr[4] = bad
            XCTAssertTrue(Gradients.hasNonFinite([a]), "\(bad)")
            XCTAssertFalse(Gradients.clipGlobalNorm([a], maxNorm: 1).isFinite)
            a.frozen = true
            XCTAssertFalse(Gradients.hasNonFinite([a]))
            a.frozen = false
        }
        Gradients.zero([a])
        XCTAssertFalse(Gradients.hasNonFinite([a]))
    }

    // MARK: Names

    func testNamePatterns() {
        let name = "model.layers.3.self_attn.q_proj.weight"
        XCTAssertTrue(NamePattern.matches("q_proj", name))
        XCTAssertTrue(NamePattern.matches("model.layers.*.self_attn.*", name))
        XCTAssertTrue(NamePattern.matches("*.weight", name))
        XCTAssertTrue(NamePattern.matches("*", name))
        XCTAssertTrue(NamePattern.matches("model.*.q_proj.weight", name))
        XCTAssertFalse(NamePattern.matches("*.bias", name))
        XCTAssertFalse(NamePattern.matches("layers.*", name))  // globs anchor at both ends
        XCTAssertFalse(NamePattern.matches("model.layers.*.mlp.*", name))
        XCTAssertFalse(NamePattern.matches("k_proj", name))
        XCTAssertFalse(NamePattern.matches("*weight*bias", name))

        let params = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                      "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight", "lm_head.weight"]
            .map { Parameter(name: $0, value: Tensor(shape: [2, 2])) }
        XCTAssertEqual(freeze(params, matching: ["embed_tokens", "model.layers.0.*"]),
                       ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.mlp.up_proj.weight"])
        XCTAssertEqual(params.map(\.frozen), [true, true, true, false, false])
    }

    func testWeightDecayRule() {
        let rule = WeightDecayRule.standard
        XCTAssertTrue(rule.decays(name: "model.layers.0.mlp.up_proj.weight", rank: 2))
        XCTAssertTrue(rule.decays(name: "lm_head.weight", rank: 2))
        XCTAssertFalse(rule.decays(name: "model.embed_tokens.weight", rank: 2))
        XCTAssertFalse(rule.decays(name: "model.layers.0.self_attn.q_norm.weight", rank: 1))
        XCTAssertFalse(rule.decays(name: "model.layers.0.self_attn.q_proj.bias", rank: 1))
        let custom = WeightDecayRule(include: ["*.bias"], exclude: ["lm_head"], minimumRank: 2)
        XCTAssertTrue(custom.decays(name: "model.layers.0.self_attn.q_proj.bias", rank: 1))
        XCTAssertFalse(custom.decays(name: "lm_head.weight", rank: 2))
        XCTAssertTrue(custom.decays(name: "model.embed_tokens.weight", rank: 2))
    }

    // MARK: Schedule

    func testCosineScheduleKnownValues() {
        let s = LRSchedule.cosine(peak: 1e-3, warmupSteps: 4, totalSteps: 14, minLRRatio: 0.1)
        // Warmup: peak * (step + 1) / 4.
        XCTAssertEqual(s.lr(step: 0), 2.5e-4, accuracy: 1e-15)
        XCTAssertEqual(s.lr(step: 1), 5e-4, accuracy: 1e-15)
        XCTAssertEqual(s.lr(step: 3), 1e-3, accuracy: 1e-15)
        // Cosine over 10 steps from the peak to 1e-4.
        XCTAssertEqual(s.lr(step: 4), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(s.lr(step: 9), 1e-4 + 0.9e-3 * 0.5, accuracy: 1e-15)  // halfway
        XCTAssertEqual(s.lr(step: 6), 1e-4 + 0.9e-3 * 0.5 * (1 + cos(Double.pi * 0.2)), accuracy: 1e-15)
        XCTAssertEqual(s.lr(step: 14), 1e-4, accuracy: 1e-15)
        XCTAssertEqual(s.lr(step: 1000), 1e-4, accuracy: 1e-15)
        // Monotone after warmup.
        for k in 4..<20 { XCTAssertLessThanOrEqual(s.lr(step: k + 1), s.lr(step: k)) }
    }

    func testConstantSchedule() throws {
        let c = LRSchedule.constant(2e-4, warmupSteps: 2)
        XCTAssertEqual([0, 1, 2, 500].map { c.lr(step: $0) }, [1e-4, 2e-4, 2e-4, 2e-4])
        XCTAssertEqual(LRSchedule.constant(3e-4).lr(step: 0), 3e-4)
        let coded = try JSONDecoder().decode(LRSchedule.self, from: JSONEncoder().encode(c))
        XCTAssertEqual(coded, c)
    }
}
