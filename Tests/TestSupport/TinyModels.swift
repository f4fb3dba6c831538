import Foundation

/// Tiny random models and small data sets on disk for tests that run the `rqat` executable
/// (written here without the package's own modules, so TestSupport stays dependency-free).
package enum TinyModels {
    /// A random tiny Qwen3 (hidden 32, 2 layers, 4 heads / 2 KV heads, head_dim 8, MLP 64, tied
    /// embeddings) with the tiny BPE tokenizer of the fixtures, as a Hugging Face directory
    /// (`config.json`, `model.safetensors`, `tokenizer.json`). Norm weights are 1, every matrix
    /// is drawn from N(0, 0.2²) by a generator seeded with `seed`. `headDim` 32 gives every
    /// matrix a multiple of 32 rows, which the GPTQ packed format of `rqat ptq` needs.
    package static func writeModel(at directory: URL, seed: UInt64, vocabOverride: Int? = nil, headDim: Int = 8,
                                   maxPositions: Int = 128) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let tokenizer = TestPaths.fixture("tiny-tokenizer/tokenizer.json")
        try FileManager.default.copyItem(at: tokenizer, to: directory.appendingPathComponent("tokenizer.json"))
        let vocab = try vocabOverride ?? vocabularySize(tokenizerJSON: tokenizer)
        let hidden = 32, intermediate = 64, layers = 2, heads = 4, kvHeads = 2
        let config: [String: Any] = [
            "model_type": "qwen3", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kvHeads,
            "head_dim": headDim, "vocab_size": vocab, "rms_norm_eps": 1e-6, "rope_theta": 10_000,
            "max_position_embeddings": maxPositions, "tie_word_embeddings": true, "attention_bias": false,
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
            .write(to: directory.appendingPathComponent("config.json"))

        // The tensors a tied Qwen3 has (the names and shapes `Checkpoint.expectedShapes` lists).
        var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            shapes += [
                (p + "input_layernorm.weight", [hidden]),
                (p + "self_attn.q_proj.weight", [heads * headDim, hidden]),
                (p + "self_attn.k_proj.weight", [kvHeads * headDim, hidden]),
                (p + "self_attn.v_proj.weight", [kvHeads * headDim, hidden]),
                (p + "self_attn.o_proj.weight", [hidden, heads * headDim]),
                (p + "post_attention_layernorm.weight", [hidden]),
                (p + "mlp.gate_proj.weight", [intermediate, hidden]),
                (p + "mlp.up_proj.weight", [intermediate, hidden]),
                (p + "mlp.down_proj.weight", [hidden, intermediate]),
                (p + "self_attn.q_norm.weight", [headDim]),
                (p + "self_attn.k_norm.weight", [headDim]),
            ]
        }
        shapes.append(("model.norm.weight", [hidden]))
        var rng = SplitMix64(seed: seed)
        let tensors = shapes.map { name, shape -> (String, [Int], [Float]) in
            let count = shape.reduce(1, *)
            let values = shape.count == 1 ? [Float](repeating: 1, count: count) : (0..<count).map { _ in 0.2 * rng.normal() }
            return (name, shape, values)
        }
        try writeSafeTensors(tensors, to: directory.appendingPathComponent("model.safetensors"))
    }

    /// A tiny teacher (`dir/teacher`) and a pipeline config (`dir/config.json`, run in `dir/run`)
    /// that runs every stage in seconds on gsm8k prompts: GPTQ (and the `extraPTQ` entries)
    /// at W4G32, KD and SFT from GPTQ for 2 steps with a curve point at each. Returns the config.
    package static func writePipeline(in dir: URL, extraPTQ: String = "", batchTokens: Int = 1024) throws -> URL {
        try writeModel(at: dir.appendingPathComponent("teacher"), seed: 11, headDim: 32, maxPositions: 1024)
        let config = """
            {"out": "run", "task": {"name": "gsm8k", "trace_prompts": 6, "heldout": 3, "test": 4},
             "teacher": {"model": "teacher"},
             "traces": {"temperature": 0, "max_tokens": 6},
             "calibration": [{"name": "traces", "source": "traces", "windows": 4, "length": 32}],
             "ptq": [{"method": "gptq", "scheme": "w4g32"}\(extraPTQ)],
             "qat": [{"from": "gptq-w4g32", "objective": "kd"}, {"from": "gptq-w4g32", "objective": "sft"}],
             "qat_train": {"steps": 2, "batch_tokens": \(batchTokens), "seq_len": 1024, "lr": 1e-3, "curve_every": 1},
             "eval": {"max_tokens": 6, "batch": 2, "curve_problems": 2}}
            """
        let file = dir.appendingPathComponent("config.json")
        try Data(config.utf8).write(to: file)
        return file
    }

    /// `count` chat records {"prompt": "What is a + b?", "completion": "a + b = c. The answer is c."}
    /// as JSONL.
    package static func writeArithmeticData(to url: URL, count: Int = 16) throws {
        var lines: [String] = []
        for i in 0..<count {
            let a = 3 + i, b = 2 * i + 1
            let record = ["prompt": "What is \(a) + \(b)?", "completion": "\(a) + \(b) = \(a + b). The answer is \(a + b)."]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self))
        }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
    }

    /// Ids run from 0 to the largest id of the vocabulary and the added tokens.
    static func vocabularySize(tokenizerJSON url: URL) throws -> Int {
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
        let vocab = (root["model"] as? [String: Any])?["vocab"] as? [String: Int] ?? [:]
        let added = (root["added_tokens"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? Int }
        return (Array(vocab.values) + added).max().map { $0 + 1 } ?? 0
    }

    /// A safetensors file of F32 tensors: an 8-byte little-endian header length, the JSON header
    /// (padded with spaces to a multiple of 8), then the data in header order.
    static func writeSafeTensors(_ tensors: [(String, [Int], [Float])], to url: URL) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for (name, shape, values) in tensors {
            header[name] = ["dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * values.count]] as [String: Any]
            offset += 4 * values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var file = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for (_, _, values) in tensors {
            values.withUnsafeBytes { file.append(contentsOf: $0) }   // little-endian hosts only (x86-64, arm64)
        }
        try file.write(to: url)
    }
}

/// splitmix64 with Box-Muller normals: reproducible weights without the package's RNG.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }

    mutating func normal() -> Float {
        Float((-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform()))
    }
}
