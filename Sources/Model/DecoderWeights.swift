import Formats
import Tensors

/// The weights of one decoder block, with the projections that read the same input stored
/// side by side: q, k and v as one (qRows + 2 kvRows, C) matrix and gate and up as one
/// (2F, C) matrix, so a token reads each input once and decoding makes fewer, larger passes.
public final class DecoderLayerWeights {
    public let inputNorm: Tensor        // (C)
    public let qkv: Tensor              // (H*D + 2*KV*D, C): rows of q, then k, then v
    public let qkvBias: Tensor?         // (H*D + 2*KV*D)
    public let qNorm: Tensor?           // (D) Qwen3
    public let kNorm: Tensor?           // (D) Qwen3
    public let output: Tensor           // (C, H*D)
    public let postAttentionNorm: Tensor // (C)
    public let gateUp: Tensor           // (2F, C): rows of gate, then up
    public let down: Tensor             // (C, F)

    init(inputNorm: Tensor, qkv: Tensor, qkvBias: Tensor?, qNorm: Tensor?, kNorm: Tensor?,
         output: Tensor, postAttentionNorm: Tensor, gateUp: Tensor, down: Tensor) {
        self.inputNorm = inputNorm
        self.qkv = qkv
        self.qkvBias = qkvBias
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.output = output
        self.postAttentionNorm = postAttentionNorm
        self.gateUp = gateUp
        self.down = down
    }
}

/// All weights of a decoder-only model in fp32.
public final class DecoderWeights {
    public let config: ModelConfig
    public let embedding: Tensor        // (V, C)
    public let layers: [DecoderLayerWeights]
    public let finalNorm: Tensor        // (C)
    /// (V, C); the embedding itself when the model ties them.
    public let lmHead: Tensor

    /// Loads weights by their Hugging Face checkpoint names, checking every shape.
    public init(config: ModelConfig, source: any WeightSource) throws {
        self.config = config
        let c = config.hiddenSize, d = config.headDim, f = config.intermediateSize
        let qRows = config.numAttentionHeads * d, kvRows = config.numKeyValueHeads * d

        func load(_ name: String, _ shape: [Int]) throws -> Tensor { try source.tensor(name, expecting: shape) }

        embedding = try load("model.embed_tokens.weight", [config.vocabSize, c])
        finalNorm = try load("model.norm.weight", [c])
        if config.tieWordEmbeddings {
            lmHead = embedding
        } else {
            lmHead = try load("lm_head.weight", [config.vocabSize, c])
        }

        var layers: [DecoderLayerWeights] = []
        for i in 0..<config.numHiddenLayers {
            let p = "model.layers.\(i)."
            let q = try load(p + "self_attn.q_proj.weight", [qRows, c])
            let k = try load(p + "self_attn.k_proj.weight", [kvRows, c])
            let v = try load(p + "self_attn.v_proj.weight", [kvRows, c])
            var bias: Tensor? = nil
            if config.attentionBias {
                bias = stackRows([try load(p + "self_attn.q_proj.bias", [qRows]),
                                  try load(p + "self_attn.k_proj.bias", [kvRows]),
                                  try load(p + "self_attn.v_proj.bias", [kvRows])])
            }
            let gate = try load(p + "mlp.gate_proj.weight", [f, c])
            let up = try load(p + "mlp.up_proj.weight", [f, c])
            layers.append(DecoderLayerWeights(
                inputNorm: try load(p + "input_layernorm.weight", [c]),
                qkv: stackRows([q, k, v]),
                qkvBias: bias,
                qNorm: config.usesQKNorm ? try load(p + "self_attn.q_norm.weight", [d]) : nil,
                kNorm: config.usesQKNorm ? try load(p + "self_attn.k_norm.weight", [d]) : nil,
                output: try load(p + "self_attn.o_proj.weight", [c, qRows]),
                postAttentionNorm: try load(p + "post_attention_layernorm.weight", [c]),
                gateUp: stackRows([gate, up]),
                down: try load(p + "mlp.down_proj.weight", [c, f])))
        }
        self.layers = layers
    }
}

/// Concatenates tensors along their first dimension (all other dimensions equal).
func stackRows(_ parts: [Tensor]) -> Tensor {
    let tail = Array(parts[0].shape.dropFirst())
    precondition(parts.allSatisfy { Array($0.shape.dropFirst()) == tail }, "stackRows: shapes differ")
    let out = Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + tail)
    var offset = 0
    for p in parts {
        (out.ptr + offset).update(from: p.ptr, count: p.count)
        offset += p.count
    }
    return out
}
