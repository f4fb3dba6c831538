/// The one description of a Llama/Qwen2/Qwen3 decoder's tensors: what each is for, its shape,
/// its name in every checkpoint dialect (Hugging Face, llama.cpp's GGUF, GPTQ's packed parts),
/// which projections the decoders stack, and whether the LM head is tied.
///
/// Every reader, writer and decoder goes through this file for names and shapes, so a new
/// dialect or a new architecture variant is added here once. (A test fails if a Hugging Face
/// tensor name is spelled out anywhere else in Sources/.)

/// What a tensor does in the model.
package enum TensorRole: String, CaseIterable, Sendable {
    case embedding, finalNorm, lmHead
    case q, qBias, k, kBias, v, vBias, o, qNorm, kNorm, gate, up, down, inputNorm, postAttentionNorm

    package enum Kind: Sendable { case matrix, norm, bias }

    package var kind: Kind {
        switch self {
        case .embedding, .lmHead, .q, .k, .v, .o, .gate, .up, .down: .matrix
        case .finalNorm, .qNorm, .kNorm, .inputNorm, .postAttentionNorm: .norm
        case .qBias, .kBias, .vBias: .bias
        }
    }

    /// Whether the tensor belongs to a decoder block (else to the model as a whole).
    package var isPerLayer: Bool { ![.embedding, .finalNorm, .lmHead].contains(self) }

    /// The tensors of one block, in transformers' `named_parameters()` order.
    package static let blockOrder: [TensorRole] = [.q, .qBias, .k, .kBias, .v, .vBias, .o, .qNorm, .kNorm,
                                                   .gate, .up, .down, .inputNorm, .postAttentionNorm]

    /// The linear weights of a block (what weight quantization acts on), in block order.
    package static let blockLinears: [TensorRole] = [.q, .k, .v, .o, .gate, .up, .down]

    /// Hugging Face module path below `model.layers.N.` (or the root), without `.weight`/`.bias`.
    fileprivate var huggingFaceModule: String {
        switch self {
        case .embedding: "model.embed_tokens"
        case .finalNorm: "model.norm"
        case .lmHead: "lm_head"
        case .q, .qBias: "self_attn.q_proj"
        case .k, .kBias: "self_attn.k_proj"
        case .v, .vBias: "self_attn.v_proj"
        case .o: "self_attn.o_proj"
        case .qNorm: "self_attn.q_norm"
        case .kNorm: "self_attn.k_norm"
        case .gate: "mlp.gate_proj"
        case .up: "mlp.up_proj"
        case .down: "mlp.down_proj"
        case .inputNorm: "input_layernorm"
        case .postAttentionNorm: "post_attention_layernorm"
        }
    }

    /// llama.cpp's stem below `blk.N.` (or the root).
    fileprivate var ggufStem: String {
        switch self {
        case .embedding: "token_embd"
        case .finalNorm: "output_norm"
        case .lmHead: "output"
        case .q, .qBias: "attn_q"
        case .k, .kBias: "attn_k"
        case .v, .vBias: "attn_v"
        case .o: "attn_output"
        case .qNorm: "attn_q_norm"
        case .kNorm: "attn_k_norm"
        case .gate: "ffn_gate"
        case .up: "ffn_up"
        case .down: "ffn_down"
        case .inputNorm: "attn_norm"
        case .postAttentionNorm: "ffn_norm"
        }
    }

    fileprivate var suffix: String { kind == .bias ? ".bias" : ".weight" }
}

/// One tensor of a model: its role, block (nil for model-wide tensors), name and shape.
package struct TensorSpec: Sendable, Equatable {
    package let role: TensorRole
    package let layer: Int?
    package let name: String
    package let shape: [Int]
}

/// The linear layers of a block grouped by the input they read: q/k/v share the normed input,
/// gate/up share the normed post-attention input. The decoders store each group as one matrix
/// with the parts' rows one after another, so a token reads each input once.
package enum LinearSite: Int, CaseIterable, Sendable {
    case qkv, output, gateUp, down

    /// The projections stacked in this site's matrix, top rows first.
    package var parts: [TensorRole] {
        switch self {
        case .qkv: [.q, .k, .v]
        case .output: [.o]
        case .gateUp: [.gate, .up]
        case .down: [.down]
        }
    }

    /// The biases stacked like `parts` (only q/k/v have them, and only in some families).
    package var biasParts: [TensorRole] { self == .qkv ? [.qBias, .kBias, .vBias] : [] }
}

/// A model's tensors as its config implies them.
package struct DecoderArchitecture: Sendable {
    package let config: ModelConfig

    package init(_ config: ModelConfig) { self.config = config }

    // MARK: Names

    /// The Hugging Face name (`model.layers.3.self_attn.q_proj.weight`).
    package static func name(_ role: TensorRole, layer: Int? = nil) -> String {
        precondition(role.isPerLayer == (layer != nil), "\(role) \(role.isPerLayer ? "needs" : "takes no") layer")
        return (layer.map { layerPrefix($0) } ?? "") + role.huggingFaceModule + role.suffix
    }

    /// The prefix every Hugging Face name of block l starts with.
    package static func layerPrefix(_ l: Int) -> String { "model.layers.\(l)." }

    /// The role and block of a Hugging Face name, nil for a name this architecture has not.
    package static func role(ofName name: String) -> (role: TensorRole, layer: Int?)? {
        for role in TensorRole.allCases where !role.isPerLayer {
            if name == self.name(role) { return (role, nil) }
        }
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0 else { return nil }
        let tail = String(rest[rest.index(after: dot)...])
        guard let role = TensorRole.allCases.first(where: { $0.isPerLayer && $0.huggingFaceModule + $0.suffix == tail }) else {
            return nil
        }
        return (role, layer)
    }

    /// llama.cpp's name of a Hugging Face name ("model.layers.3.self_attn.q_proj.weight" →
    /// "blk.3.attn_q.weight"), nil when there is none.
    package static func ggufName(forName name: String) -> String? {
        guard let (role, layer) = role(ofName: name) else { return nil }
        return (layer.map { "blk.\($0)." } ?? "") + role.ggufStem + role.suffix
    }

    /// The Hugging Face name of a llama.cpp tensor name, nil when there is none (rope_freqs, ...).
    package static func name(forGGUF gguf: String) -> String? {
        guard let dot = gguf.lastIndex(of: ".") else { return nil }
        let stem = gguf[..<dot], suffix = String(gguf[dot...])
        guard suffix == ".weight" || suffix == ".bias" else { return nil }
        if let role = TensorRole.allCases.first(where: { !$0.isPerLayer && $0.ggufStem == stem && $0.suffix == suffix }) {
            return name(role)
        }
        let parts = stem.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
              let role = TensorRole.allCases.first(where: { $0.isPerLayer && $0.ggufStem == parts[2] && $0.suffix == suffix }) else {
            return nil
        }
        return name(role, layer: layer)
    }

    /// A name pattern (substring) that matches the token embedding and nothing else; weight
    /// decay excludes it by this pattern, which is saved with a run's optimizer state.
    package static let embeddingPattern = "embed_tokens"

    /// The llama.cpp name of the token embedding and of a q bias, which GGUF metadata readers
    /// look for to tell the vocabulary size and whether attention has biases.
    package static var ggufEmbeddingName: String { ggufName(forName: name(.embedding))! }
    package static var ggufFirstQBiasName: String { ggufName(forName: name(.qBias, layer: 0))! }
    package static var ggufLMHeadName: String { ggufName(forName: name(.lmHead))! }

    /// Whether llama.cpp's converter reordered this tensor's rows for RoPE in a GGUF file of the
    /// family: q and k of `llama` only. llama.cpp runs Llama with interleaved-pair RoPE, so its
    /// converter permutes those rows; Qwen2/Qwen3 run NeoX-style (half-split) RoPE as
    /// transformers does, and their rows are stored as they are.
    package static func isRoPEPermuted(_ role: TensorRole, family: ModelConfig.Family) -> Bool {
        family == .llama && [.q, .qBias, .k, .kBias].contains(role)
    }
    package static func usesKeyHeads(_ role: TensorRole) -> Bool { [.k, .kBias].contains(role) }

    /// A GPTQ-packed part of a linear weight: `model.layers.0.self_attn.q_proj.weight` →
    /// `model.layers.0.self_attn.q_proj.qweight` (likewise qzeros, scales, g_idx).
    package enum PackedPart: String, CaseIterable, Sendable { case qweight, qzeros, scales, g_idx }

    package static func packedName(_ part: PackedPart, ofWeight weight: String) -> String {
        precondition(weight.hasSuffix(".weight"), "\(weight) is not a weight name")
        return String(weight.dropLast("weight".count)) + part.rawValue
    }

    /// The weight name of a packed part's name, nil for other names.
    package static func weightName(ofPacked name: String, part: PackedPart) -> String? {
        name.hasSuffix("." + part.rawValue) ? String(name.dropLast(part.rawValue.count)) + "weight" : nil
    }

    // MARK: Shapes

    /// Rows of q (heads x head_dim) and of k or v (KV heads x head_dim).
    package var qRows: Int { config.numAttentionHeads * config.headDim }
    package var kvRows: Int { config.numKeyValueHeads * config.headDim }

    /// Whether this config has a tensor of the role (biases and q/k norms depend on the family,
    /// the LM head on tying).
    package func has(_ role: TensorRole) -> Bool {
        switch role {
        case .qBias, .kBias, .vBias: config.attentionBias
        case .qNorm, .kNorm: config.usesQKNorm
        case .lmHead: !config.tieWordEmbeddings
        default: true
        }
    }

    /// The shape of the role's tensor ([out, in] for projections).
    package func shape(_ role: TensorRole) -> [Int] {
        let c = config.hiddenSize, f = config.intermediateSize
        switch role {
        case .embedding, .lmHead: return [config.vocabSize, c]
        case .finalNorm, .inputNorm, .postAttentionNorm: return [c]
        case .q: return [qRows, c]
        case .k, .v: return [kvRows, c]
        case .qBias: return [qRows]
        case .kBias, .vBias: return [kvRows]
        case .o: return [c, qRows]
        case .qNorm, .kNorm: return [config.headDim]
        case .gate, .up: return [f, c]
        case .down: return [c, f]
        }
    }

    package func spec(_ role: TensorRole, layer: Int? = nil) -> TensorSpec {
        TensorSpec(role: role, layer: layer, name: Self.name(role, layer: layer), shape: shape(role))
    }

    /// Every tensor the config implies, in transformers' `named_parameters()` order: embedding,
    /// each block in `TensorRole.blockOrder`, final norm, LM head (only when untied).
    package var tensors: [TensorSpec] {
        var out = [spec(.embedding)]
        for l in 0..<config.numHiddenLayers {
            out += TensorRole.blockOrder.filter(has).map { spec($0, layer: l) }
        }
        out.append(spec(.finalNorm))
        if has(.lmHead) { out.append(spec(.lmHead)) }
        return out
    }

    /// The stacked rows of a site's matrix: each part's role, first row and row count.
    package func stackedRows(_ site: LinearSite) -> [(role: TensorRole, rowStart: Int, rows: Int)] {
        var start = 0
        return site.parts.map { role in
            defer { start += shape(role)[0] }
            return (role, start, shape(role)[0])
        }
    }
}
