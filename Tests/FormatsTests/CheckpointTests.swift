import Foundation
import XCTest
import Tensors
import TestSupport
@testable import Formats

final class CheckpointTests: XCTestCase {
    func ramp(_ shape: [Int], seed: Float = 0) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { Float($0) * 0.01 + seed })
    }

    // MARK: the q/k row permutation

    func testPermuteMatchesLlamaCppOnSmallExample() {
        // One head of width 6, one column: Hugging Face rows [0 1 2 | 3 4 5] become the pairs
        // (0,3) (1,4) (2,5) — numpy's reshape(1, 2, 3, 1).swapaxes(1, 2).
        let hf = Tensor(shape: [6], values: [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(LlamaRowPermutation.permute(hf, heads: 1).array, [0, 3, 1, 4, 2, 5])
        // Two heads of width 4, two columns: each head is reordered on its own.
        let m = Tensor(shape: [8, 2], values: (0..<16).map(Float.init))
        XCTAssertEqual(LlamaRowPermutation.permute(m, heads: 2).array,
                       [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15])
    }

    func testPermuteUnpermuteAreInverse() {
        for (rows, cols, heads) in [(8, 3, 2), (12, 5, 3), (64, 1, 4), (6, 2, 1)] {
            let t = ramp([rows, cols])
            XCTAssertEqual(LlamaRowPermutation.unpermute(LlamaRowPermutation.permute(t, heads: heads), heads: heads).array, t.array)
            XCTAssertEqual(LlamaRowPermutation.permute(LlamaRowPermutation.unpermute(t, heads: heads), heads: heads).array, t.array)
            if rows / heads > 2 {
                XCTAssertNotEqual(LlamaRowPermutation.permute(t, heads: heads).array, t.array)
            }
        }
    }

    func testHFNames() {
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "token_embd.weight"), "model.embed_tokens.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "output.weight"), "lm_head.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "output_norm.weight"), "model.norm.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.12.attn_q.bias"), "model.layers.12.self_attn.q_proj.bias")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.1.attn_k_norm.weight"), "model.layers.1.self_attn.k_norm.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.2.attn_norm.weight"), "model.layers.2.input_layernorm.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.2.ffn_norm.weight"), "model.layers.2.post_attention_layernorm.weight")
        XCTAssertEqual(GGUFWeights.hfName(forGGUF: "blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight")
        XCTAssertNil(GGUFWeights.hfName(forGGUF: "rope_freqs.weight"))
        XCTAssertNil(GGUFWeights.hfName(forGGUF: "blk.x.attn_q.weight"))
        XCTAssertNil(GGUFWeights.hfName(forGGUF: "blk.0.attn_q.scale"))
    }

    // MARK: synthetic GGUF checkpoints

    /// A one-layer GGUF (hidden 8, 2 heads, 1 KV head, head_dim 4, FFN 16, vocab 5) in F32 whose
    /// q/k rows (and biases) are stored permuted when `arch` is llama, as llama.cpp's converter does.
    /// Returns the file and the Hugging Face tensors it should read back as. `statedFFN` is the
    /// feed_forward_length written in the metadata (the tensors always have 16).
    func tinyGGUF(arch: String, bias: Bool, statedFFN: Int = 16) throws -> (URL, [String: Tensor]) {
        var b = GGUFBuilder()
        b.add("general.architecture", arch)
        for (key, value) in [("block_count", 1), ("embedding_length", 8), ("feed_forward_length", statedFFN),
                             ("attention.head_count", 2), ("attention.head_count_kv", 1), ("context_length", 64)] {
            b.add("\(arch).\(key)", u32: UInt32(value))
        }
        b.add("\(arch).rope.freq_base", kind: 6, GGUFBuilder.le(Float(50_000).bitPattern))
        b.add("\(arch).attention.layer_norm_rms_epsilon", kind: 6, GGUFBuilder.le(Float(1e-5).bitPattern))
        b.add("tokenizer.ggml.eos_token_id", u32: 4)
        var hf: [String: Tensor] = [:]
        func add(_ gguf: String, _ shape: [Int], permuteHeads: Int? = nil) {
            let t = ramp(shape, seed: Float(hf.count))
            hf[GGUFWeights.hfName(forGGUF: gguf)!] = t
            let stored = (arch == "llama" ? permuteHeads : nil).map { LlamaRowPermutation.permute(t, heads: $0) } ?? t
            let bytes = stored.array.flatMap { GGUFBuilder.le($0.bitPattern) }
            b.tensor(gguf, dims: shape.reversed(), type: GGMLType.f32.rawValue, data: bytes)
        }
        add("token_embd.weight", [5, 8])
        add("blk.0.attn_norm.weight", [8])
        add("blk.0.attn_q.weight", [8, 8], permuteHeads: 2)
        add("blk.0.attn_k.weight", [4, 8], permuteHeads: 1)
        add("blk.0.attn_v.weight", [4, 8])
        if bias {
            add("blk.0.attn_q.bias", [8], permuteHeads: 2)
            add("blk.0.attn_k.bias", [4], permuteHeads: 1)
            add("blk.0.attn_v.bias", [4])
        }
        add("blk.0.attn_output.weight", [8, 8])
        add("blk.0.ffn_norm.weight", [8])
        add("blk.0.ffn_gate.weight", [16, 8])
        add("blk.0.ffn_up.weight", [16, 8])
        add("blk.0.ffn_down.weight", [8, 16])
        add("output_norm.weight", [8])
        return (try scratchFile(self, b.build()), hf)
    }

    func testSyntheticGGUFReadsBackHuggingFaceTensors() throws {
        for (arch, bias) in [("llama", false), ("llama", true), ("qwen2", true)] {
            let (url, expected) = try tinyGGUF(arch: arch, bias: bias)
            let ckpt = try Checkpoint.open(url.path)
            XCTAssertEqual(ckpt.kind, .gguf)
            XCTAssertEqual(ckpt.config.modelType.rawValue, arch)
            XCTAssertEqual(ckpt.config.headDim, 4)
            XCTAssertEqual(ckpt.config.vocabSize, 5)      // no token list: token_embd rows
            XCTAssertEqual(ckpt.config.ropeTheta, 50_000)
            XCTAssertEqual(ckpt.config.maxPositionEmbeddings, 64)
            XCTAssertEqual(ckpt.config.eosTokenId, 4)
            XCTAssertEqual(ckpt.config.attentionBias, bias)
            XCTAssertTrue(ckpt.config.tieWordEmbeddings)
            try ckpt.validateShapes()
            XCTAssertEqual(Set(ckpt.weights.names), Set(expected.keys))
            for (name, t) in expected {
                let got = try ckpt.weights.tensor(name)
                XCTAssertEqual(got.shape, t.shape, name)
                XCTAssertEqual(got.array, t.array, "\(arch) \(name)")
            }
        }
    }

    func testOpenRejectsShapesThatDisagreeWithMetadata() throws {
        let (url, _) = try tinyGGUF(arch: "qwen2", bias: true, statedFFN: 24)
        expectFormatError(try Checkpoint.open(url.path),
                          contains: [url.path, "model.layers.0.mlp.gate_proj.weight", "[16, 8]", "[24, 8]"])
        XCTAssertEqual(try Checkpoint.openUnchecked(url.path).config.intermediateSize, 24)
    }

    func testUnsupportedArchitectureIsNamed() throws {
        var b = GGUFBuilder()
        b.add("general.architecture", "gpt2")
        let url = try scratchFile(self, b.build())
        expectFormatError(try Checkpoint.open(url.path), contains: [url.path, "gpt2"])
    }

    func testMissingMetadataIsNamed() throws {
        var b = GGUFBuilder()
        b.add("general.architecture", "qwen3")
        b.add("qwen3.embedding_length", u32: 8)
        let url = try scratchFile(self, b.build())
        expectFormatError(try Checkpoint.open(url.path), contains: [url.path, "qwen3.attention.head_count"])
    }

    func testBadPaths() throws {
        expectFormatError(try Checkpoint.open("/nonexistent/model.gguf"), contains: ["/nonexistent/model.gguf", "no such file"])
        let dir = try scratchFile(self, Data()).deletingLastPathComponent()
        expectFormatError(try Checkpoint.open(dir.path), contains: ["config.json"])
        let notGGUF = try scratchFile(self, Data("hello world, not a model".utf8), name: "x.bin")
        expectFormatError(try Checkpoint.open(notGGUF.path), contains: [notGGUF.path, "not a GGUF file"])
    }

    // MARK: real checkpoints

    func testSmolLM2GGUF() throws {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        let ckpt = try Checkpoint.open(TestPaths.smolLM2GGUF.path)
        XCTAssertEqual(ckpt.kind, .gguf)
        XCTAssertNotNil(ckpt.gguf)
        let expected = ModelConfig(modelType: .llama, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                   numAttentionHeads: 9, numKeyValueHeads: 3, headDim: 64, vocabSize: 49152,
                                   rmsNormEps: 1e-5, ropeTheta: 100_000, maxPositionEmbeddings: 8192,
                                   tieWordEmbeddings: true, attentionBias: false, bosTokenId: 1, eosTokenId: 2)
        XCTAssertEqual(ckpt.config, expected)
        try ckpt.validateShapes()
        XCTAssertEqual(ckpt.weights.names.count, 272)
        XCTAssertEqual(ckpt.weights.shape("model.layers.0.self_attn.k_proj.weight"), [192, 576])

        // q/k come back un-permuted (by 9 and 3 heads); v is passed through untouched.
        let file = try XCTUnwrap(ckpt.gguf)
        let q = try ckpt.weights.tensor("model.layers.4.self_attn.q_proj.weight")
        XCTAssertEqual(q.array, LlamaRowPermutation.unpermute(try file.tensor("blk.4.attn_q.weight"), heads: 9).array)
        let k = try ckpt.weights.tensor("model.layers.4.self_attn.k_proj.weight")
        XCTAssertEqual(k.array, LlamaRowPermutation.unpermute(try file.tensor("blk.4.attn_k.weight"), heads: 3).array)
        XCTAssertEqual(try ckpt.weights.tensor("model.layers.4.self_attn.v_proj.weight").array,
                       try file.tensor("blk.4.attn_v.weight").array)
    }

    func testTinySafetensorsCheckpoints() throws {
        for (dir, family, tied) in [("tiny-qwen3", ModelConfig.Family.qwen3, false), ("tiny-qwen2", .qwen2, true)] {
            let url = TestPaths.fixture(dir)
            try TestPaths.require(url.appendingPathComponent("model.safetensors"))
            let ckpt = try Checkpoint.open(url.path)
            XCTAssertEqual(ckpt.kind, .safetensors)
            XCTAssertNil(ckpt.gguf)
            XCTAssertEqual(ckpt.config.modelType, family)
            XCTAssertEqual(ckpt.config.tieWordEmbeddings, tied)
            try ckpt.validateShapes()
            XCTAssertEqual(ckpt.weights.has("lm_head.weight"), !tied)
            let embed = try ckpt.weights.tensor("model.embed_tokens.weight")
            XCTAssertEqual(embed.shape, [256, 64])
            XCTAssertTrue(embed.buffer.contains { $0 != 0 })
        }
    }

    func testValidateShapesNamesMismatch() throws {
        let url = TestPaths.fixture("tiny-qwen3")
        try TestPaths.require(url.appendingPathComponent("model.safetensors"))
        let ckpt = try Checkpoint.open(url.path)
        var config = ckpt.config
        config.intermediateSize = 96
        let wrong = Checkpoint(path: ckpt.path, kind: ckpt.kind, config: config, weights: ckpt.weights)
        expectFormatError(try wrong.validateShapes(),
                          contains: [url.path, "model.layers.0.mlp.gate_proj.weight", "[128, 64]", "[96, 64]"])
        config = ckpt.config
        config.tieWordEmbeddings = true
        config.attentionBias = true
        let noBias = Checkpoint(path: ckpt.path, kind: ckpt.kind, config: config, weights: ckpt.weights)
        expectFormatError(try noBias.validateShapes(), contains: ["missing tensor model.layers.0.self_attn.q_proj.bias"])
    }
}
