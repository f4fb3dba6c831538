import Foundation

/// The architecture of a decoder-only model: one type for the Llama, Qwen2 and Qwen3 families.
///
/// Field names are Swift's; `CodingKeys` map them to the Hugging Face `config.json` names, so a
/// config written by this type loads in transformers and vice versa.
package struct ModelConfig: Codable, Equatable, Sendable {
    package enum Family: String, Codable, Sendable, CaseIterable {
        case llama, qwen2, qwen3
    }

    package var modelType: Family
    package var hiddenSize: Int
    package var intermediateSize: Int
    package var numHiddenLayers: Int
    package var numAttentionHeads: Int
    package var numKeyValueHeads: Int
    /// Per-head width; Qwen3 states it explicitly, the others derive it as hidden / heads.
    package var headDim: Int
    package var vocabSize: Int
    package var rmsNormEps: Float
    package var ropeTheta: Float
    package var maxPositionEmbeddings: Int
    package var tieWordEmbeddings: Bool
    /// Bias on the q/k/v projections (Qwen2 always; Llama when `attention_bias` is set).
    package var attentionBias: Bool
    package var bosTokenId: Int?
    package var eosTokenId: Int?

    /// Qwen3 applies an RMSNorm over each head of q and k before RoPE.
    package var usesQKNorm: Bool { modelType == .qwen3 }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case architectures
        case torchDtype = "torch_dtype"
    }

    package init(modelType: Family, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil, vocabSize: Int,
                rmsNormEps: Float = 1e-6, ropeTheta: Float = 10_000, maxPositionEmbeddings: Int = 4096,
                tieWordEmbeddings: Bool = false, attentionBias: Bool? = nil,
                bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias ?? (modelType == .qwen2)
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    /// Newer transformers versions nest rope_theta inside `rope_parameters`.
    private struct RopeParameters: Codable { var rope_theta: Float? }

    package init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let typeName = try c.decode(String.self, forKey: .modelType)
        guard let family = Family(rawValue: typeName) else {
            throw DecodingError.dataCorruptedError(
                forKey: .modelType, in: c,
                debugDescription: "unknown model_type \"\(typeName)\" (supported: \(Family.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        modelType = family
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / numAttentionHeads
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        let nested = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)?.rope_theta
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? nested ?? 10_000
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 4096
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? (family == .qwen2)
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        // eos_token_id may be a list; the first entry is the one generation stops on.
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId) {
            eosTokenId = one
        } else {
            eosTokenId = (try? c.decodeIfPresent([Int].self, forKey: .eosTokenId))??.first
        }
    }

    package func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType.rawValue, forKey: .modelType)
        let arch = ["llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"]
        try c.encode([arch[modelType.rawValue]!], forKey: .architectures)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
        try c.encode("float32", forKey: .torchDtype)
    }

    /// Reads and checks a `config.json`; every failure names the file.
    package static func load(_ url: URL) throws -> ModelConfig {
        guard let data = try? Data(contentsOf: url) else {
            throw FormatError(url.path, "cannot read config.json")
        }
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch let DecodingError.dataCorrupted(ctx) {
            // Both "not JSON at all" and our own unknown-model_type report land here.
            let detail = (ctx.underlyingError as NSError?)?.localizedDescription
            throw FormatError(url.path, ctx.codingPath.isEmpty ? "invalid JSON (\(detail ?? ctx.debugDescription))" : ctx.debugDescription)
        } catch let DecodingError.keyNotFound(key, _) {
            throw FormatError(url.path, "missing key \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw FormatError(url.path, "wrong type at \"\(ctx.codingPath.map(\.stringValue).joined(separator: "."))\"")
        } catch {
            throw FormatError(url.path, "invalid config: \(error)")
        }
        try config.validate(path: url.path)
        return config
    }

    /// Shapes that must agree before any weight is read.
    package func validate(path: String) throws {
        func check(_ ok: Bool, _ why: String) throws { if !ok { throw FormatError(path, why) } }
        try check(hiddenSize > 0 && intermediateSize > 0 && numHiddenLayers > 0 && vocabSize > 0,
                  "sizes must be positive")
        try check(numAttentionHeads > 0 && numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0,
                  "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        try check(headDim > 0 && headDim % 2 == 0, "head_dim (\(headDim)) must be even for RoPE")
        try check(rmsNormEps > 0, "rms_norm_eps must be positive")
    }

    /// Number of parameters (tied LM head counted once).
    package var parameterCount: Int {
        let q = hiddenSize * numAttentionHeads * headDim
        let kv = 2 * hiddenSize * numKeyValueHeads * headDim
        let o = numAttentionHeads * headDim * hiddenSize
        let bias = attentionBias ? (numAttentionHeads + 2 * numKeyValueHeads) * headDim : 0
        let qkNorm = usesQKNorm ? 2 * headDim : 0
        let mlp = 3 * hiddenSize * intermediateSize
        let perLayer = q + kv + o + bias + qkNorm + mlp + 2 * hiddenSize
        let embed = vocabSize * hiddenSize
        return numHiddenLayers * perLayer + hiddenSize + embed * (tieWordEmbeddings ? 1 : 2)
    }
}
