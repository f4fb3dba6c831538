import Foundation
import Formats
import Tensors

/// `rqat init`: a random-weight checkpoint in Hugging Face layout (config.json,
/// model.safetensors, tokenizer.json, tokenizer_config.json) for `rqat sft` to train from
/// scratch; every loader (`Checkpoint.open`, transformers) reads it.
///
/// Initialisation follows GPT-2 / transformers' `_init_weights` with GPT-2's residual scaling:
/// every matrix (embedding and projections) is normal with std 0.02, except the two that write
/// into the residual stream (attention output and MLP down), whose std is 0.02 / sqrt(2 x layers)
/// so the stream's variance does not grow with depth; norms are 1, biases 0. The LM head is tied
/// to the embedding unless `tieEmbeddings` is off.
package struct InitJob {
    package var family: ModelConfig.Family
    package var hiddenSize: Int
    package var layers: Int
    package var heads: Int?
    package var kvHeads: Int?
    package var intermediateSize: Int?
    package var headDim: Int?
    package var maxPositions = 1024
    package var tieEmbeddings = true
    package var seed: UInt64 = 0
    package var std: Float = 0.02

    package init(family: ModelConfig.Family, hiddenSize: Int, layers: Int) {
        self.family = family
        self.hiddenSize = hiddenSize
        self.layers = layers
    }

    /// What `rqat init` reports (and prints as JSON).
    package struct Summary: Codable, Sendable, Equatable {
        package var out: String
        package var config: ModelConfig
        package var parameters: Int
        package var seed: UInt64
        package var std: Float
        package var residualStd: Float
        package var tokenizer: String
        package var vocabularyFingerprint: String
    }

    /// The Hadamard orders the rotation transforms know besides powers of two: a size must be
    /// 2^k times one of these.
    package static let hadamardBases = [1, 12, 20, 28, 36, 40]

    package static func hasHadamard(_ n: Int) -> Bool {
        guard n > 0 else { return false }
        var m = n
        while m % 2 == 0 && !hadamardBases.contains(m) { m /= 2 }
        return hadamardBases.contains(m)
    }

    /// The config these settings describe for a vocabulary of `vocabSize` (heads default to
    /// hidden / 64, at least 1; KV heads to heads; intermediate to 4 x hidden; head size to
    /// hidden / heads). Refuses sizes without a Hadamard transform, naming the option.
    package func config(vocabSize: Int, eosTokenId: Int?) throws -> ModelConfig {
        guard hiddenSize > 0, layers > 0 else { throw JobError("--hidden and --layers must be positive") }
        let heads = self.heads ?? max(1, hiddenSize / 64)
        let kvHeads = self.kvHeads ?? heads
        let intermediate = intermediateSize ?? 4 * hiddenSize
        let headDim = self.headDim ?? hiddenSize / heads
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0 else {
            throw JobError("--heads (\(heads)) must be a positive multiple of --kv-heads (\(kvHeads))")
        }
        if self.headDim == nil && hiddenSize % heads != 0 {
            throw JobError("--hidden \(hiddenSize) is not a multiple of --heads \(heads); pass --head-dim")
        }
        if family == .llama && heads * headDim != hiddenSize {
            throw JobError("llama needs --heads x --head-dim = --hidden (\(heads) x \(headDim) != \(hiddenSize)); use --arch qwen3 for other head sizes")
        }
        for (option, value) in [("--hidden", hiddenSize), ("--intermediate", intermediate), ("--head-dim", headDim)] where !Self.hasHadamard(value) {
            throw JobError("\(option) \(value) has no Hadamard transform: choose 2^k x one of \(Self.hadamardBases.map(String.init).joined(separator: ", ")) (e.g. 128, 192, 256, 320, 384, 512)")
        }
        guard maxPositions >= 16 else { throw JobError("--max-positions must be at least 16") }
        let config = ModelConfig(modelType: family, hiddenSize: hiddenSize, intermediateSize: intermediate,
                                 numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kvHeads,
                                 headDim: headDim, vocabSize: vocabSize, rmsNormEps: 1e-6, ropeTheta: 10_000,
                                 maxPositionEmbeddings: maxPositions, tieWordEmbeddings: tieEmbeddings,
                                 attentionBias: false, eosTokenId: eosTokenId)
        try config.validate(path: "rqat init")
        return config
    }

    /// Random weights for `config`, in transformers' parameter order, drawn from one seeded
    /// stream (the same seed gives the same checkpoint).
    package func weights(_ config: ModelConfig) -> [(name: String, tensor: Tensor)] {
        var rng = SeededRNG(seed: seed)
        let residualStd = std / Float(2 * config.numHiddenLayers).squareRoot()
        return DecoderArchitecture(config).tensors.map { spec in
            let t = Tensor(shape: spec.shape)
            switch spec.role.kind {
            case .norm: for i in 0..<t.count { t.ptr[i] = 1 }
            case .bias: break
            case .matrix: rng.fillNormal(t, std: [.o, .down].contains(spec.role) ? residualStd : std)
            }
            return (spec.name, t)
        }
    }

    /// Writes the checkpoint into `out` (built beside it and renamed into place, so an
    /// interrupted run leaves no half-written directory). `tokenizerURL` is a tokenizer.json;
    /// the EOS, pad and BOS named by a tokenizer_config.json beside it are kept.
    package func run(tokenizerURL: URL, out: URL) throws -> Summary {
        guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
            throw JobError("\(tokenizerURL.path): no such tokenizer file; pass --tokenizer a tokenizer.json file or a directory holding one")
        }
        let tokenizer = try BPETokenizer(tokenizerJSON: tokenizerURL)
        let configURL = tokenizerURL.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        if let data = try? Data(contentsOf: configURL),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            for (key, set) in [("eos_token", { tokenizer.eosTokenId = $0 }), ("pad_token", { tokenizer.padTokenId = $0 }),
                               ("bos_token", { tokenizer.bosTokenId = $0 })] as [(String, (Int) -> Void)] {
                if let name = object[key] as? String, let id = tokenizer.id(of: name) { set(id) }
            }
        }
        let config = try config(vocabSize: tokenizer.vocabSize, eosTokenId: tokenizer.eosTokenId)
        let tensors = weights(config)
        try DurableFiles.writeDirectory(out) { dir in
            try SafeTensorsWriter.write(tensors.map { ($0.name, $0.tensor, SafeTensorsDType.F32) },
                                        metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try DurableFiles.write(try encoder.encode(config), to: dir.appendingPathComponent("config.json"))
            try tokenizer.writeHuggingFaceFiles(to: dir, chatTemplate: .chatML, modelMaxLength: config.maxPositionEmbeddings)
        }
        return Summary(out: out.path, config: config, parameters: config.parameterCount, seed: seed, std: std,
                       residualStd: std / Float(2 * layers).squareRoot(), tokenizer: tokenizerURL.path,
                       vocabularyFingerprint: String(format: "%016llx", tokenizer.vocabularyFingerprint))
    }
}
