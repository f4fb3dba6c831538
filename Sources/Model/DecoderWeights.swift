import Formats
import Tensors

/// The weights of one decoder block, with the projections that read the same input stored
/// side by side (`LinearSite`): q, k and v as one (qRows + 2 kvRows, C) layer and gate and up
/// as one (2F, C) layer, so a token reads each input once and decoding makes fewer, larger passes.
package final class DecoderLayerWeights {
    package let inputNorm: Tensor        // (C)
    package let qkv: LinearLayer         // (H*D + 2*KV*D, C): rows of q, then k, then v; bias (H*D + 2*KV*D)
    package let qNorm: Tensor?           // (D) Qwen3
    package let kNorm: Tensor?           // (D) Qwen3
    package let output: LinearLayer      // (C, H*D)
    package let postAttentionNorm: Tensor // (C)
    package let gateUp: LinearLayer      // (2F, C): rows of gate, then up
    package let down: LinearLayer        // (C, F)
    /// Changes of each row's keys (after RoPE) and values, (1, 2 KV*D), before they enter the
    /// KV cache: the KV-cache quantization site. They run on decode threads, so they must not
    /// share scratch between calls.
    package var cacheTransforms: [any LinearInputTransform] = []
    /// A rotation of every query and key head after RoPE (QuaRot's online Hadamard of size
    /// head_dim): scores are unchanged, the keys cached (and quantized) are rotated.
    package var headRotation: HadamardTransform?
    /// FlatQuant's per-head key transform after RoPE (and the head rotation): keys k P, queries
    /// q P⁻ᵀ, so scores are unchanged and the keys cached (and quantized) are transformed.
    package var keyTransform: FrozenHeadTransform?
    /// FlatQuant's per-head value transform: values v P before the cache (o_proj's weight
    /// carries (I ⊗ P)⁻ᵀ).
    package var valueTransform: FrozenHeadTransform?

    init(inputNorm: Tensor, qkv: LinearLayer, qNorm: Tensor?, kNorm: Tensor?,
         output: LinearLayer, postAttentionNorm: Tensor, gateUp: LinearLayer, down: LinearLayer) {
        self.inputNorm = inputNorm
        self.qkv = qkv
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.output = output
        self.postAttentionNorm = postAttentionNorm
        self.gateUp = gateUp
        self.down = down
    }

    /// The layer at a site.
    package func linear(_ site: LinearSite) -> LinearLayer {
        switch site {
        case .qkv: qkv
        case .output: output
        case .gateUp: gateUp
        case .down: down
        }
    }
}

/// All weights of a decoder-only model in fp32.
package final class DecoderWeights {
    package let config: ModelConfig
    package let embedding: Tensor        // (V, C)
    package let layers: [DecoderLayerWeights]
    package let finalNorm: Tensor        // (C)
    /// (V, C); its weight is the embedding itself when the model ties them.
    package let lmHead: LinearLayer

    /// Weights from tensors already in memory (shared, not copied).
    init(config: ModelConfig, embedding: Tensor, finalNorm: Tensor, lmHead: LinearLayer, layers: [DecoderLayerWeights]) {
        self.config = config
        self.embedding = embedding
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.layers = layers
    }

    /// Loads weights by their Hugging Face checkpoint names, checking every shape.
    package init(config: ModelConfig, source: any WeightSource) throws {
        self.config = config
        let architecture = DecoderArchitecture(config)
        func load(_ role: TensorRole, _ layer: Int? = nil) throws -> Tensor {
            let spec = architecture.spec(role, layer: layer)
            return try source.tensor(spec.name, expecting: spec.shape)
        }
        /// A site's matrix: its parts' rows one after another.
        func stacked(_ site: LinearSite, _ l: Int) throws -> Tensor { stackRows(try site.parts.map { try load($0, l) }) }

        embedding = try load(.embedding)
        finalNorm = try load(.finalNorm)
        lmHead = LinearLayer(dense: architecture.has(.lmHead) ? try load(.lmHead) : embedding)

        var layers: [DecoderLayerWeights] = []
        for l in 0..<config.numHiddenLayers {
            let bias = architecture.has(.qBias) ? stackRows(try LinearSite.qkv.biasParts.map { try load($0, l) }) : nil
            let qkNorms = architecture.has(.qNorm)
            layers.append(DecoderLayerWeights(
                inputNorm: try load(.inputNorm, l),
                qkv: LinearLayer(dense: try stacked(.qkv, l), bias: bias),
                qNorm: qkNorms ? try load(.qNorm, l) : nil,
                kNorm: qkNorms ? try load(.kNorm, l) : nil,
                output: LinearLayer(dense: try load(.o, l)),
                postAttentionNorm: try load(.postAttentionNorm, l),
                gateUp: LinearLayer(dense: try stacked(.gateUp, l)),
                down: LinearLayer(dense: try load(.down, l))))
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
