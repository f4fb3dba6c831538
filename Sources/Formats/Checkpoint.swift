import Foundation
import Tensors

/// A model on disk: its architecture and its weights under Hugging Face names.
///
/// A llama.cpp `.gguf` file (config built from its metadata), a Hugging Face directory with
/// `config.json` and safetensors, or a GPTQ-packed directory (its linears dequantized on read):
/// every command opens models through `Checkpoint.open`.
package struct Checkpoint {
    package enum Kind: String, Sendable { case gguf, safetensors, gptq }

    package let path: String
    package let kind: Kind
    package let config: ModelConfig
    package let weights: any WeightSource
    /// The parsed file for GGUF checkpoints (its metadata also holds the tokenizer).
    package let gguf: GGUFFile?
    /// Run-time activation and KV-cache quantization a quantized checkpoint records (W4A4KV4).
    package let activationQuant: ActivationQuantSpec?
    /// The online transforms a rotated checkpoint (QuaRot) expects at run time.
    package let rotation: RotationSpec?

    package init(path: String, kind: Kind, config: ModelConfig, weights: any WeightSource, gguf: GGUFFile? = nil,
                 activationQuant: ActivationQuantSpec? = nil, rotation: RotationSpec? = nil) {
        self.rotation = rotation
        self.path = path
        self.kind = kind
        self.config = config
        self.weights = weights
        self.gguf = gguf
        self.activationQuant = activationQuant
    }

    /// Opens `path`: a `.gguf` file, or a directory with `config.json` and safetensors (GPTQ-packed
    /// or not), and checks
    /// every weight's shape against the config (cheap: no tensor data is read).
    package static func open(_ path: String) throws -> Checkpoint {
        let checkpoint = try openUnchecked(path)
        try checkpoint.validateShapes()
        return checkpoint
    }

    /// `open` without the shape check, for tools that inspect or repair a checkpoint.
    package static func openUnchecked(_ path: String) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FormatError(path, "no such file or directory")
        }
        let url = URL(fileURLWithPath: path)
        if isDirectory.boolValue {
            // A GPTQ-packed directory (rqat ptq, GPTQModel, AutoGPTQ) dequantizes as it is read.
            let configURL = url.appendingPathComponent("config.json")
            if let q = QuantizedCheckpoint.quantizationConfig(configURL) {
                let (config, _, weights) = try QuantizedCheckpoint.load(url)
                return Checkpoint(path: path, kind: .gptq, config: config, weights: weights,
                                  activationQuant: try ActivationQuantSpec.read(quantizationConfig: q, path: configURL.path),
                                  rotation: try RotationSpec.read(quantizationConfig: q, path: configURL.path))
            }
            let config = try ModelConfig.load(url.appendingPathComponent("config.json"))
            return Checkpoint(path: path, kind: .safetensors, config: config,
                              weights: try SafeTensorsWeights(directory: url))
        }
        // GGUFFile reports a non-GGUF file by its magic bytes, which is the clearest message.
        let file = try GGUFFile(url: url)
        return Checkpoint(path: path, kind: .gguf, config: try config(fromGGUF: file),
                          weights: try GGUFWeights(file), gguf: file)
    }

    /// The Hugging Face config equivalent to a GGUF file's `{arch}.*` metadata.
    package static func config(fromGGUF file: GGUFFile) throws -> ModelConfig {
        guard let arch = file.string("general.architecture") else {
            throw FormatError(file.path, "missing metadata general.architecture")
        }
        guard let family = ModelConfig.Family(rawValue: arch) else {
            throw FormatError(file.path, "unsupported architecture \"\(arch)\" (supported: \(ModelConfig.Family.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let value = file.metadata["\(arch).\(key)"] else {
                throw FormatError(file.path, "missing metadata \(arch).\(key)")
            }
            guard let n = value.int else {
                throw FormatError(file.path, "metadata \(arch).\(key) should be one integer, found \(value)")
            }
            return n
        }
        func optionalInt(_ key: String) throws -> Int? {
            file.metadata["\(arch).\(key)"] == nil ? nil : try int(key)
        }
        let hidden = try int("embedding_length")
        let heads = try int("attention.head_count")
        // The tokenizer lists every token; token_embd's rows are the fallback for files without one.
        guard let vocab = file.metadata["tokenizer.ggml.tokens"]?.array?.count
                ?? file.tensors[DecoderArchitecture.ggufEmbeddingName]?.shape.first else {
            throw FormatError(file.path, "cannot tell the vocabulary size: no tokenizer.ggml.tokens and no \(DecoderArchitecture.ggufEmbeddingName)")
        }
        let config = ModelConfig(
            modelType: family,
            hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"),
            numHiddenLayers: try int("block_count"),
            numAttentionHeads: heads,
            numKeyValueHeads: try optionalInt("attention.head_count_kv") ?? heads,
            headDim: try optionalInt("attention.key_length"),
            vocabSize: vocab,
            rmsNormEps: Float(file.double("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-6),
            ropeTheta: Float(file.double("\(arch).rope.freq_base") ?? 10_000),
            maxPositionEmbeddings: try optionalInt("context_length") ?? 4096,
            tieWordEmbeddings: file.tensors[DecoderArchitecture.ggufLMHeadName] == nil,
            attentionBias: file.tensors[DecoderArchitecture.ggufFirstQBiasName] != nil,
            bosTokenId: file.int("tokenizer.ggml.bos_token_id"),
            eosTokenId: file.int("tokenizer.ggml.eos_token_id"))
        try config.validate(path: file.path)
        return config
    }

    /// Every tensor the config implies, with its shape ([out, in] for projections).
    /// The LM head is listed only for untied models.
    package static func expectedShapes(_ c: ModelConfig) -> [(name: String, shape: [Int])] {
        DecoderArchitecture(c).tensors.map { ($0.name, $0.shape) }
    }

    /// Checks that every weight the config implies is present with the right shape, before any
    /// is decoded. A tied model may still carry an `lm_head.weight`; if so its shape is checked too.
    package func validateShapes() throws {
        let architecture = DecoderArchitecture(config)
        var expected = Self.expectedShapes(config)
        let head = DecoderArchitecture.name(.lmHead)
        if config.tieWordEmbeddings && weights.has(head) { expected.append((head, architecture.shape(.lmHead))) }
        for (name, shape) in expected {
            guard let found = weights.shape(name) else {
                throw FormatError(weights.path, "missing tensor \(name) (expected shape \(shape) from the config)")
            }
            guard found == shape else {
                throw FormatError(weights.path, "tensor \(name) has shape \(found) but the config implies \(shape)")
            }
        }
    }
}
