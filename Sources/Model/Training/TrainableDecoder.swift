import CKernels
import Formats
import Tensors

/// A Llama/Qwen2/Qwen3 decoder for training: fp32 parameters under their Hugging Face names,
/// a forward pass that keeps the activations its backward needs, and a hand-written backward.
///
/// Same maths as the inference `Decoder` (rotate-half RoPE, GQA, Qwen3 per-head q/k RMSNorm
/// before RoPE, optional q/k/v bias, tied or untied LM head). Every sequence of a batch starts
/// at position 0; attention is causal within its sequence.
///
/// Usage: `let logits = model.forward(tokens:batch:length:)`, compute dL/dlogits (e.g. with
/// `CrossEntropy.forwardBackward`), then `model.backward(dLogits:)`, which ADDS into every
/// `Parameter.grad`, so micro-batches accumulate until the caller zeroes the gradients.
package final class TrainableDecoder {
    package let config: ModelConfig
    /// Every trainable tensor, in transformers' `named_parameters()` order: embedding, then per
    /// layer q, k, v (weight, bias), o, q/k norms, gate, up, down, input norm, post-attention
    /// norm; final norm; LM head (only when untied — a tied head is the embedding).
    package let parameters: [Parameter]
    private let byName: [String: Parameter]

    final class Layer {
        let inputNorm: Parameter            // (C)
        let q, k, v: Parameter              // (H*D, C), (KV*D, C), (KV*D, C)
        let qBias, kBias, vBias: Parameter? // (H*D), (KV*D), (KV*D)
        let qNorm, kNorm: Parameter?        // (D) Qwen3
        let o: Parameter                    // (C, H*D)
        let postNorm: Parameter             // (C)
        let gate, up: Parameter             // (F, C)
        let down: Parameter                 // (C, F)
        /// Copies of q|k|v and gate|up stacked by rows, refreshed by every forward (with a weight
        /// quantizer: its output, refreshed per quantizer generation), so each of those groups is
        /// one GEMM in forward and in backward's input gradient.
        let qkvStacked: Tensor              // (W, C), W = (H + 2KV) * D
        let gateUpStacked: Tensor           // (2F, C)
        /// With a weight quantizer: q|k|v and gate|up above hold the QUANTIZED weights (filled
        /// when the quantizer's generation changes, not every forward), and these hold o, down.
        var oQuantized: Tensor?             // (C, H*D)
        var downQuantized: Tensor?          // (C, F)

        /// The o and down weights the forward uses: quantized when a quantizer is set.
        var oWeight: UnsafeMutablePointer<Float> { oQuantized?.ptr ?? o.value.ptr }
        var downWeight: UnsafeMutablePointer<Float> { downQuantized?.ptr ?? down.value.ptr }

        init(inputNorm: Parameter, q: Parameter, k: Parameter, v: Parameter, qBias: Parameter?, kBias: Parameter?,
             vBias: Parameter?, qNorm: Parameter?, kNorm: Parameter?, o: Parameter, postNorm: Parameter,
             gate: Parameter, up: Parameter, down: Parameter) {
            self.inputNorm = inputNorm; self.q = q; self.k = k; self.v = v
            self.qBias = qBias; self.kBias = kBias; self.vBias = vBias
            self.qNorm = qNorm; self.kNorm = kNorm; self.o = o; self.postNorm = postNorm
            self.gate = gate; self.up = up; self.down = down
            qkvStacked = Tensor(shape: [q.value.shape[0] + 2 * k.value.shape[0], q.value.shape[1]])
            gateUpStacked = Tensor(shape: [2 * gate.value.shape[0], gate.value.shape[1]])
        }

        /// Copies the current q, k, v and gate, up values into the stacked buffers.
        func refreshStacked() {
            var offset = 0
            for p in [q, k, v] {
                (qkvStacked.ptr + offset).update(from: p.value.ptr, count: p.value.count)
                offset += p.value.count
            }
            gateUpStacked.ptr.update(from: gate.value.ptr, count: gate.value.count)
            (gateUpStacked.ptr + gate.value.count).update(from: up.value.ptr, count: up.value.count)
        }

        /// Fills the stacked buffers and the o, down copies with the quantizer's output.
        func fillQuantized(_ quantizer: TrainingWeightQuantizer) {
            var offset = 0
            for p in [q, k, v] {
                quantizer.forwardWeight(of: p, into: qkvStacked.ptr + offset)
                offset += p.value.count
            }
            quantizer.forwardWeight(of: gate, into: gateUpStacked.ptr)
            quantizer.forwardWeight(of: up, into: gateUpStacked.ptr + gate.value.count)
            let oq = oQuantized ?? Tensor(shape: o.value.shape)
            let dq = downQuantized ?? Tensor(shape: down.value.shape)
            quantizer.forwardWeight(of: o, into: oq.ptr)
            quantizer.forwardWeight(of: down, into: dq.ptr)
            oQuantized = oq
            downQuantized = dq
        }

        func dropQuantized() {
            oQuantized = nil
            downQuantized = nil
        }
    }

    let embedding: Parameter   // (V, C)
    let layers: [Layer]
    let finalNorm: Parameter   // (C)
    let lmHead: Parameter      // (V, C); the embedding parameter when tied
    let rope: RoPE

    // MARK: - Construction

    /// Loads every parameter by its Hugging Face name, checking shapes (FormatError otherwise).
    package convenience init(config: ModelConfig, source: any WeightSource) throws {
        try self.init(config: config) { name, shape, _ in try source.tensor(name, expecting: shape) }
    }

    /// Random initialisation: matrices and embedding ~ N(0, 0.02^2), norm weights 1, biases 0.
    package convenience init(config: ModelConfig, seed: UInt64) {
        var rng = SeededRNG(seed: seed)
        try! self.init(config: config) { _, shape, kind in
            let t = Tensor(shape: shape)
            switch kind {
            case .matrix: rng.fillNormal(t, std: 0.02)
            case .norm: t.fill(1)
            case .bias: break
            }
            return t
        }
    }

    private init(config: ModelConfig, make: (String, [Int], TensorRole.Kind) throws -> Tensor) throws {
        self.config = config
        let architecture = DecoderArchitecture(config)
        // Created in the architecture's (transformers') order, which `parameters` keeps.
        var byRole: [TensorRole: [Parameter]] = [:]
        var all: [Parameter] = []
        for spec in architecture.tensors {
            let p = Parameter(name: spec.name, value: try make(spec.name, spec.shape, spec.role.kind))
            all.append(p)
            byRole[spec.role, default: []].append(p)
        }
        func perLayer(_ role: TensorRole, _ l: Int) -> Parameter { byRole[role]![l] }
        func optional(_ role: TensorRole, _ l: Int) -> Parameter? { architecture.has(role) ? perLayer(role, l) : nil }

        embedding = byRole[.embedding]![0]
        layers = (0..<config.numHiddenLayers).map { l in
            Layer(inputNorm: perLayer(.inputNorm, l), q: perLayer(.q, l), k: perLayer(.k, l), v: perLayer(.v, l),
                  qBias: optional(.qBias, l), kBias: optional(.kBias, l), vBias: optional(.vBias, l),
                  qNorm: optional(.qNorm, l), kNorm: optional(.kNorm, l), o: perLayer(.o, l),
                  postNorm: perLayer(.postAttentionNorm, l), gate: perLayer(.gate, l), up: perLayer(.up, l),
                  down: perLayer(.down, l))
        }
        finalNorm = byRole[.finalNorm]![0]
        lmHead = architecture.has(.lmHead) ? byRole[.lmHead]![0] : embedding
        parameters = all
        byName = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
        rope = RoPE(headDim: config.headDim, theta: Double(config.ropeTheta))
    }

    package func parameter(_ name: String) -> Parameter? { byName[name] }

    /// Recomputes the quantized weights when the quantizer has moved on since they were filled.
    private func fillQuantizedIfStale() {
        guard let quantizer = weightQuantizer, quantizedGeneration != quantizer.generation else { return }
        for p in layers { p.fillQuantized(quantizer) }
        quantizedGeneration = quantizer.generation
    }

    // MARK: - Input transforms at linear sites

    /// Learnable changes of linear layers' inputs, by block and site (an activation quantizer
    /// with a learnable clip, a learnable scale or rotation). Their parameters train with the
    /// model's (the trainer adds `transformParameters`).
    package var inputTransforms: [LinearSiteKey: any TrainableInputTransform] = [:] {
        didSet { transformed = [:] }
    }

    /// The input and cache transforms' learnable parameters, in block and site order.
    package var transformParameters: [Parameter] {
        inputTransforms.sorted { $0.key < $1.key }.flatMap { $0.value.parameters }
            + cacheTransforms.sorted { $0.key < $1.key }.flatMap { $0.value.parameters }
            + keyTransforms.sorted { $0.key < $1.key }.flatMap { $0.value.parameters }
            + valueTransforms.sorted { $0.key < $1.key }.flatMap { $0.value.parameters }
    }

    /// Each transform's output of the last forward (the product's input), by site.
    private var transformed: [LinearSiteKey: Tensor] = [:]
    private var transformScratch: Tensor?

    /// The input the site's product reads: x itself, or its transform (kept for backward).
    private func siteInput(_ l: Int, _ site: LinearSite, _ x: UnsafeMutablePointer<Float>, rows n: Int, width: Int) -> UnsafeMutablePointer<Float> {
        let key = LinearSiteKey(layer: l, site: site)
        guard let transform = inputTransforms[key] else { return x }
        let out: Tensor
        if let t = transformed[key], t.count == n * width { out = t } else { out = Tensor(shape: [n, width]); transformed[key] = out }
        transform.forward(x, into: out.ptr, rows: n, width: width)
        return out.ptr
    }

    /// dx holds dL/d(transformed input) and becomes dL/d(input); the transform's parameter
    /// gradients are added. x is the input forward transformed.
    private func transformBackward(_ l: Int, _ site: LinearSite, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows n: Int, width: Int) {
        guard let transform = inputTransforms[LinearSiteKey(layer: l, site: site)] else { return }
        let scratch: Tensor
        if let t = transformScratch, t.count >= n * width { scratch = t } else { scratch = Tensor(shape: [n * width]); transformScratch = scratch }
        transform.backward(x: x, dy: dx, dx: scratch.ptr, rows: n, width: width)
        dx.update(from: scratch.ptr, count: n * width)
    }

    /// Learnable changes of what a block's attention caches, by block: each row's keys (after
    /// RoPE) then values, (rows, 2 KV*D) — the KV-cache quantization site.
    package var cacheTransforms: [Int: any TrainableInputTransform] = [:] {
        didSet { cacheInputs = [:] }
    }
    /// A fixed rotation of every query and key head after RoPE in every block (QuaRot's online
    /// Hadamard of size head_dim; `DecoderLayerWeights.headRotation`).
    package var headRotation: HadamardTransform?
    /// FlatQuant's per-head transforms after RoPE (and the head rotation), by block: the key
    /// transform (keys k → k P, queries q → q P⁻ᵀ: scores unchanged) and the value transform
    /// (values v → v P; o_proj's weight carries (I ⊗ P)⁻ᵀ). The cache transforms see the
    /// transformed heads. `FrozenHeadTransform` is the inference decoder's.
    package var keyTransforms: [Int: FlatQuantTransform] = [:] {
        didSet { headInputs = [:] }
    }
    package var valueTransforms: [Int: FlatQuantTransform] = [:] {
        didSet { headInputs = [:] }
    }
    /// Each cache transform's input of the last forward (keys and values before it), by block.
    private var cacheInputs: [Int: Tensor] = [:]
    /// The head transforms' inputs of the last forward, by block: query and key heads (with a
    /// key transform), value heads (with a value transform), each (N heads, D).
    private var headInputs: [Int: (queries: Tensor?, keys: Tensor?, values: Tensor?)] = [:]

    /// `heads` rows of D at column `offset` of n strided rows, as one (n heads, D) tensor.
    private func gatherHeads(_ base: UnsafePointer<Float>, ld: Int, rows n: Int, offset: Int, heads: Int) -> Tensor {
        let width = heads * config.headDim, t = Tensor(shape: [n * heads, config.headDim])
        for r in 0..<n { (t.ptr + r * width).update(from: base + r * ld + offset, count: width) }
        return t
    }

    private func scatterHeads(_ t: Tensor, into base: UnsafeMutablePointer<Float>, ld: Int, rows n: Int, offset: Int) {
        let width = t.count / n
        for r in 0..<n { (base + r * ld + offset).update(from: t.ptr + r * width, count: width) }
    }

    /// Block l's query, key and value heads (strided rows of the q|k|v buffer) through its head transforms.
    private func headTransformForward(_ l: Int, _ qkv: UnsafeMutablePointer<Float>, ld: Int, rows n: Int) {
        let key = keyTransforms[l], value = valueTransforms[l]
        guard key != nil || value != nil else { return }
        let heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads, d = config.headDim
        let keyOffset = heads * d, valueOffset = keyOffset + kvHeads * d
        var saved: (queries: Tensor?, keys: Tensor?, values: Tensor?) = (nil, nil, nil)
        if let key {
            // The query side reads P⁻ᵀ: when P trains (QAT with trained transforms), re-derive
            // it from the parameters the last step left.
            if key.trainsParameters {
                do { try key.refreshInverse() } catch { fatalError("\(error); lower the learning rate or keep the transforms fixed") }
            }
            let q = gatherHeads(qkv, ld: ld, rows: n, offset: 0, heads: heads)
            let k = gatherHeads(qkv, ld: ld, rows: n, offset: keyOffset, heads: kvHeads)
            let qOut = Tensor(shape: q.shape), kOut = Tensor(shape: k.shape)
            key.transformWeight(q.ptr, into: qOut.ptr, rows: n * heads)   // q P⁻ᵀ
            key.forward(k.ptr, into: kOut.ptr, rows: n * kvHeads, width: d)
            scatterHeads(qOut, into: qkv, ld: ld, rows: n, offset: 0)
            scatterHeads(kOut, into: qkv, ld: ld, rows: n, offset: keyOffset)
            (saved.queries, saved.keys) = (q, k)
        }
        if let value {
            let v = gatherHeads(qkv, ld: ld, rows: n, offset: valueOffset, heads: kvHeads), vOut = Tensor(shape: v.shape)
            value.forward(v.ptr, into: vOut.ptr, rows: n * kvHeads, width: d)
            scatterHeads(vOut, into: qkv, ld: ld, rows: n, offset: valueOffset)
            saved.values = v
        }
        headInputs[l] = saved
    }

    /// dL/d(transformed query, key and value heads), in place in the strided dq|dk|dv rows,
    /// becomes dL/d(the heads before the transforms); the transforms' parameter gradients are added.
    private func headTransformBackward(_ l: Int, dqkv: UnsafeMutablePointer<Float>, ld: Int, rows n: Int) {
        guard let saved = headInputs[l] else { return }
        let heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads, d = config.headDim
        let keyOffset = heads * d, valueOffset = keyOffset + kvHeads * d
        if let key = keyTransforms[l], let q = saved.queries, let k = saved.keys {
            let dq = gatherHeads(dqkv, ld: ld, rows: n, offset: 0, heads: heads)
            let dk = gatherHeads(dqkv, ld: ld, rows: n, offset: keyOffset, heads: kvHeads)
            let dqIn = Tensor(shape: dq.shape), dkIn = Tensor(shape: dk.shape)
            key.weightBackward(q.ptr, dTransformed: dq.ptr, rows: n * heads, dWeight: dqIn.ptr)
            key.backward(x: k.ptr, dy: dk.ptr, dx: dkIn.ptr, rows: n * kvHeads, width: d)
            scatterHeads(dqIn, into: dqkv, ld: ld, rows: n, offset: 0)
            scatterHeads(dkIn, into: dqkv, ld: ld, rows: n, offset: keyOffset)
        }
        if let value = valueTransforms[l], let v = saved.values {
            let dv = gatherHeads(dqkv, ld: ld, rows: n, offset: valueOffset, heads: kvHeads), dvIn = Tensor(shape: dv.shape)
            value.backward(x: v.ptr, dy: dv.ptr, dx: dvIn.ptr, rows: n * kvHeads, width: d)
            scatterHeads(dvIn, into: dqkv, ld: ld, rows: n, offset: valueOffset)
        }
    }

    /// Keys and values of block l (strided rows of the q|k|v buffer) through its cache transform.
    private func cacheTransformForward(_ l: Int, _ kv: UnsafeMutablePointer<Float>, ld: Int, rows n: Int, width: Int) {
        guard let transform = cacheTransforms[l] else { return }
        let saved: Tensor
        if let t = cacheInputs[l], t.count == n * width { saved = t } else { saved = Tensor(shape: [n, width]); cacheInputs[l] = saved }
        for r in 0..<n { saved.row(r).update(from: kv + r * ld, count: width) }
        let out = Tensor(shape: [n, width])
        transform.forward(saved.ptr, into: out.ptr, rows: n, width: width)
        for r in 0..<n { (kv + r * ld).update(from: out.row(r), count: width) }
    }

    /// dL/d(transformed keys and values), in place in the strided dq|dk|dv rows, becomes
    /// dL/d(keys and values before the transform).
    private func cacheTransformBackward(_ l: Int, dx: UnsafeMutablePointer<Float>, ld: Int, rows n: Int, width: Int) {
        guard let transform = cacheTransforms[l], let saved = cacheInputs[l] else { return }
        let dy = Tensor(shape: [n, width]), out = Tensor(shape: [n, width])
        for r in 0..<n { dy.row(r).update(from: dx + r * ld, count: width) }
        transform.backward(x: saved.ptr, dy: dy.ptr, dx: out.ptr, rows: n, width: width)
        for r in 0..<n { (dx + r * ld).update(from: out.row(r), count: width) }
    }

    // MARK: - The inference decoder's view (rollouts, evaluation during training)

    /// Weights for the inference `Decoder` that ARE this model's current weights, as the
    /// training forward uses them: with a weight quantizer Q(W), else W. Embedding, norms and
    /// the fp32 matrices are the parameters' own tensors, and the stacked q|k|v and gate|up
    /// layers are the training forward's own stacked buffers, so nothing is reloaded or laid out
    /// again. After an optimizer step call `syncInferenceWeights()` before decoding with them.
    package func inferenceWeights() -> DecoderWeights {
        if let view = inferenceView { syncInferenceWeights(); return view }
        let architecture = DecoderArchitecture(config)
        let view = DecoderWeights(config: config, embedding: embedding.value, finalNorm: finalNorm.value,
                                  lmHead: LinearLayer(dense: lmHead.value), layers: layers.map { p in
            DecoderLayerWeights(
                inputNorm: p.inputNorm.value,
                qkv: LinearLayer(dense: p.qkvStacked, bias: architecture.has(.qBias) ? Tensor(shape: [p.qkvStacked.shape[0]]) : nil),
                qNorm: p.qNorm?.value, kNorm: p.kNorm?.value,
                output: LinearLayer(dense: p.o.value), postAttentionNorm: p.postNorm.value,
                gateUp: LinearLayer(dense: p.gateUpStacked), down: LinearLayer(dense: p.down.value))
        })
        inferenceView = view
        syncInferenceWeights()
        return view
    }
    private var inferenceView: DecoderWeights?

    /// Brings the view of `inferenceWeights()` up to the current parameters (and quantizer).
    package func syncInferenceWeights() {
        guard let view = inferenceView else { return }
        fillQuantizedIfStale()
        for (l, (p, v)) in zip(layers, view.layers).enumerated() {
            for site in LinearSite.allCases {
                v.linear(site).inputTransforms = inPlaceStages(inputTransforms[LinearSiteKey(layer: l, site: site)])
            }
            v.cacheTransforms = inPlaceStages(cacheTransforms[l])
            v.headRotation = headRotation
            v.keyTransform = keyTransforms[l].map(FrozenHeadTransform.init)
            v.valueTransform = valueTransforms[l].map(FrozenHeadTransform.init)
            if weightQuantizer == nil { p.refreshStacked() }
            v.output.weight = .dense(p.oQuantized ?? p.o.value)
            v.down.weight = .dense(p.downQuantized ?? p.down.value)
            if let bias = v.qkv.bias, let qb = p.qBias, let kb = p.kBias, let vb = p.vBias {
                var offset = 0
                for b in [qb, kb, vb] {
                    (bias.ptr + offset).update(from: b.value.ptr, count: b.value.count)
                    offset += b.value.count
                }
            }
        }
    }

    // MARK: - Weight quantization (QAT)

    /// The decoder-block linear weights a `weightQuantizer` acts on, per layer q, k, v, o, gate,
    /// up, down (not the embedding, LM head, norms or biases).
    package var linearWeights: [Parameter] { layers.flatMap { [$0.q, $0.k, $0.v, $0.o, $0.gate, $0.up, $0.down] } }

    /// When set, forward uses `forwardWeight(of:into:)` of every `linearWeights` entry instead of
    /// its value, and backward routes their weight gradients through `backward(of:dQuantized:)`.
    /// The quantized weights are cached and recomputed on the first forward and then only when
    /// the quantizer's `generation` changes (call its `refresh()` after each optimizer step).
    /// Setting or clearing it drops the cache; nil is the plain, unquantized decoder.
    package var weightQuantizer: TrainingWeightQuantizer? {
        didSet {
            quantizedGeneration = nil
            quantGradScratch = nil
            for l in layers { l.dropQuantized() }
        }
    }
    /// The quantizer generation the cached quantized weights belong to (nil: not filled).
    private var quantizedGeneration: Int?
    /// dL/dW_q of one linear weight, before the quantizer's backward (largest linear weight).
    private var quantGradScratch: Tensor?

    /// Weight gradient of one linear layer: dW += dy^T x into `p.grad` without a quantizer; with
    /// one, dW_q = dy^T x into scratch, then the quantizer's backward adds into the gradients.
    @inline(__always)
    private func linearWeightGradient(_ p: Parameter, _ quantizer: TrainingWeightQuantizer?,
                                      dy: UnsafePointer<Float>, ldy: Int, x: UnsafePointer<Float>, ldx: Int,
                                      dbias: UnsafeMutablePointer<Float>?, rows n: Int, inFeatures: Int, outFeatures: Int) {
        guard let quantizer else {
            TrainLayers.linearBackwardWeight(dy: dy, ldy: ldy, x: x, ldx: ldx, dw: p.grad.ptr, dbias: dbias,
                                             rows: n, inFeatures: inFeatures, outFeatures: outFeatures)
            return
        }
        let scratch: Tensor
        if let s = quantGradScratch, s.count >= p.value.count {
            scratch = s
        } else {
            let largest = linearWeights.map(\.value.count).max() ?? p.value.count
            scratch = Tensor(shape: [max(largest, p.value.count)])
            quantGradScratch = scratch
        }
        TrainLayers.linearBackwardWeight(dy: dy, ldy: ldy, x: x, ldx: ldx, dw: scratch.ptr, dbias: dbias,
                                         rows: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: false)
        quantizer.backward(of: p, dQuantized: scratch.ptr)
    }

    /// Sets every gradient to zero.
    package func zeroGradients() { for p in parameters { p.zeroGrad() } }

    /// Called by `backward` as soon as layer l's parameter gradients are complete (layers run
    /// last to first), so data-parallel training can start summing them while backward goes on.
    package var layerGradientsReady: ((Int) -> Void)?

    /// The parameters of decoder layer l (weights and the quantizer's, by name prefix).
    package static func layerPrefix(_ l: Int) -> String { DecoderArchitecture.layerPrefix(l) }

    // MARK: - Activation store

    /// Everything forward keeps for backward, plus backward's scratch, for one (B, T). Allocated
    /// once per shape and reused, so a step's memory is fixed and known in advance
    /// (`activationBytes`). Shapes below: N = B*T, W = (H + 2KV) * D.
    final class Store {
        let batch, length, rows: Int
        var tokens: [Int] = []
        final class LayerActivations {
            let input: Tensor        // (N, C)  residual stream entering the layer
            let h1: Tensor           // (N, C)  input_layernorm output
            let rstd1: Tensor        // (N)
            let qkvPre: Tensor?      // (N, W)  q, k, v projections before the q/k norms (Qwen3 only)
            let qRstd, kRstd: Tensor? // (N, H), (N, KV)
            let qkv: Tensor          // (N, W)  q, k after norm and RoPE; v
            let probs: Tensor        // (B, H, T, T) attention probabilities
            let attn: Tensor         // (N, H*D) attention output (o_proj input)
            let mid: Tensor          // (N, C)  residual after attention
            let h2: Tensor           // (N, C)  post_attention_layernorm output
            let rstd2: Tensor        // (N)
            let gateUp: Tensor       // (N, 2F) gate and up projections
            let act: Tensor          // (N, F)  silu(gate) * up (down_proj input)
            init(n: Int, b: Int, t: Int, config c: ModelConfig) {
                let w = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim
                input = Tensor(shape: [n, c.hiddenSize])
                h1 = Tensor(shape: [n, c.hiddenSize])
                rstd1 = Tensor(shape: [n])
                qkvPre = c.usesQKNorm ? Tensor(shape: [n, w]) : nil
                qRstd = c.usesQKNorm ? Tensor(shape: [n, c.numAttentionHeads]) : nil
                kRstd = c.usesQKNorm ? Tensor(shape: [n, c.numKeyValueHeads]) : nil
                qkv = Tensor(shape: [n, w])
                probs = Tensor(shape: [b, c.numAttentionHeads, t, t])
                attn = Tensor(shape: [n, c.numAttentionHeads * c.headDim])
                mid = Tensor(shape: [n, c.hiddenSize])
                h2 = Tensor(shape: [n, c.hiddenSize])
                rstd2 = Tensor(shape: [n])
                gateUp = Tensor(shape: [n, 2 * c.intermediateSize])
                act = Tensor(shape: [n, c.intermediateSize])
            }
            var tensors: [Tensor] {
                [input, h1, rstd1, qkv, probs, attn, mid, h2, rstd2, gateUp, act] + [qkvPre, qRstd, kRstd].compactMap { $0 }
            }
        }
        let layers: [LayerActivations]
        let final: Tensor            // (N, C) residual stream after the last layer
        let hF: Tensor               // (N, C) final norm output (LM head input)
        let rstdF: Tensor            // (N)
        let logits: Tensor           // (N, V)
        let cos, sin: Tensor         // (T, D/2) RoPE tables
        // Backward scratch, shared by all layers.
        let dResid: Tensor           // (N, C)
        let dH: Tensor               // (N, C)
        let dAttn: Tensor            // (N, H*D)
        let dQKV: Tensor             // (N, W)
        let dProbs: Tensor           // (B, H, T, T)
        let dGateUp: Tensor          // (N, 2F)
        let dAct: Tensor             // (N, F)

        init(batch: Int, length: Int, config c: ModelConfig, rope: RoPE) {
            self.batch = batch
            self.length = length
            let n = batch * length
            rows = n
            let w = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim
            layers = (0..<c.numHiddenLayers).map { _ in LayerActivations(n: n, b: batch, t: length, config: c) }
            final = Tensor(shape: [n, c.hiddenSize])
            hF = Tensor(shape: [n, c.hiddenSize])
            rstdF = Tensor(shape: [n])
            logits = Tensor(shape: [n, c.vocabSize])
            let half = c.headDim / 2
            let cosT = Tensor(shape: [length, half]), sinT = Tensor(shape: [length, half])
            rope.reserve(length)
            rope.cosTable.withUnsafeBufferPointer { cosT.ptr.update(from: $0.baseAddress!, count: length * half) }
            rope.sinTable.withUnsafeBufferPointer { sinT.ptr.update(from: $0.baseAddress!, count: length * half) }
            cos = cosT
            sin = sinT
            dResid = Tensor(shape: [n, c.hiddenSize])
            dH = Tensor(shape: [n, c.hiddenSize])
            dAttn = Tensor(shape: [n, c.numAttentionHeads * c.headDim])
            dQKV = Tensor(shape: [n, w])
            dProbs = Tensor(shape: [batch, c.numAttentionHeads, length, length])
            dGateUp = Tensor(shape: [n, 2 * c.intermediateSize])
            dAct = Tensor(shape: [n, c.intermediateSize])
        }

        var bytes: Int {
            let all = layers.flatMap(\.tensors) + [final, hF, rstdF, logits, cos, sin,
                                                   dResid, dH, dAttn, dQKV, dProbs, dGateUp, dAct]
            return all.reduce(0) { $0 + $1.count * 4 }
        }
    }

    private var store: Store?

    /// Bytes of the activation store for one forward+backward at (batch, length): the saved
    /// activations of every layer, the logits and the backward scratch. Weights, gradients and
    /// optimizer state are not included (nor the model's stacked q|k|v and gate|up weight copies,
    /// which are as large as those weights). Per layer (N = B*T, W = (H+2KV)*D, floats):
    /// 4 N*C (input, h1, mid, h2) + 2N (rstd) + N*W (qkv) [+ N*W + N*(H+KV) with q/k norms]
    /// + B*H*T*T (probabilities) + N*H*D + 3 N*F; plus N*(3C + 2 + V) and T*D once, and
    /// scratch 2N*C + N*H*D + N*W + B*H*T*T + 3N*F.
    package func activationBytes(batch: Int, length: Int) -> Int {
        let c = config, n = batch * length
        let hidden = c.hiddenSize, f = c.intermediateSize, d = c.headDim
        let h = c.numAttentionHeads, kv = c.numKeyValueHeads
        let w = (h + 2 * kv) * d
        let probs = batch * h * length * length
        var perLayer = 4 * n * hidden + 2 * n + n * w + probs + n * h * d + 3 * n * f
        if c.usesQKNorm { perLayer += n * w + n * (h + kv) }
        let once = n * (2 * hidden + 1) + n * c.vocabSize + length * d
        let scratch = 2 * n * hidden + n * h * d + n * w + probs + 3 * n * f
        return 4 * (c.numHiddenLayers * perLayer + once + scratch)
    }

    private func store(batch: Int, length: Int) -> Store {
        if let s = store, s.batch == batch, s.length == length { return s }
        store = nil   // free the old one before allocating
        let s = Store(batch: batch, length: length, config: config, rope: rope)
        store = s
        return s
    }

    /// Bytes held by the current activation store (0 before the first forward); equals
    /// `activationBytes(batch:length:)` for the shape of the last forward.
    package var activationStoreBytes: Int { store?.bytes ?? 0 }

    /// Drops the activation store (it is rebuilt by the next forward).
    package func releaseActivations() { store = nil }

    // MARK: - Forward

    /// Runs `batch` sequences of `length` tokens (row-major: tokens[b * length + t]) and returns
    /// the logits (B*T, V). The returned tensor belongs to the activation store and is
    /// overwritten by the next forward.
    package func forward(tokens: [Int], batch: Int, length: Int) -> Tensor {
        precondition(batch > 0 && length > 0 && tokens.count == batch * length,
                     "forward: \(tokens.count) tokens for batch \(batch) x length \(length)")
        for t in tokens {
            precondition(t >= 0 && t < config.vocabSize, "token id \(t) outside the vocabulary (\(config.vocabSize))")
        }
        let cfg = config
        let c = cfg.hiddenSize, eps = cfg.rmsNormEps
        let s = store(batch: batch, length: length)
        let n = s.rows
        s.tokens = tokens

        // x: (N, C) = embedding rows
        tokens.withUnsafeBufferPointer { tok in
            TrainLayers.embeddingForward(tokens: tok.baseAddress!, table: embedding.value.ptr,
                                         x: s.layers.first?.input.ptr ?? s.final.ptr, rows: n, dim: c)
        }
        blocksForward(s)

        // hF: (N, C) = RMSNorm(final); logits: (N, V) = hF lm_head^T
        TrainLayers.rmsNormForward(x: s.final.ptr, ldx: c, w: finalNorm.value.ptr, y: s.hF.ptr, ldy: c,
                                   rstd: s.rstdF.ptr, rows: n, dim: c, eps: eps)
        TrainLayers.linearForward(x: s.hF.ptr, ldx: c, w: lmHead.value.ptr, bias: nil, y: s.logits.ptr,
                                  ldy: cfg.vocabSize, rows: n, inFeatures: c, outFeatures: cfg.vocabSize)
        return s.logits
    }

    /// The decoder blocks alone on a residual stream: input (B*T, C) enters the first block and
    /// the returned (B*T, C) leaves the last (before the final norm). FlatQuant's calibration
    /// trains one block at a time this way. The result belongs to the activation store.
    /// Backward with `backwardBlocks(dOutput:)`.
    package func forwardBlocks(input: UnsafePointer<Float>, batch: Int, length: Int) -> Tensor {
        precondition(batch > 0 && length > 0 && !layers.isEmpty, "forwardBlocks: batch \(batch) x length \(length), \(layers.count) blocks")
        let s = store(batch: batch, length: length)
        s.tokens = []
        s.layers[0].input.ptr.update(from: input, count: s.rows * config.hiddenSize)
        blocksForward(s)
        return s.final
    }

    /// Every block's forward on s, from s.layers[0].input to s.final.
    private func blocksForward(_ s: Store) {
        let cfg = config
        let c = cfg.hiddenSize, d = cfg.headDim, f = cfg.intermediateSize, eps = cfg.rmsNormEps
        let heads = cfg.numAttentionHeads, kvHeads = cfg.numKeyValueHeads
        let qw = heads * d, kvw = kvHeads * d, w = qw + 2 * kvw
        let n = s.rows, length = s.length
        let shape = TrainLayers.AttentionShape(batch: s.batch, length: length, heads: heads, kvHeads: kvHeads, headDim: d)
        let quantizer = weightQuantizer
        fillQuantizedIfStale()

        for (l, p) in layers.enumerated() {
            let a = s.layers[l]
            let output = l + 1 < layers.count ? s.layers[l + 1].input : s.final
            // h1: (N, C) = RMSNorm(input)
            TrainLayers.rmsNormForward(x: a.input.ptr, ldx: c, w: p.inputNorm.value.ptr, y: a.h1.ptr, ldy: c,
                                       rstd: a.rstd1.ptr, rows: n, dim: c, eps: eps)
            // q: (N, H*D), k, v: (N, KV*D), side by side in one (N, W) buffer: one GEMM
            if quantizer == nil { p.refreshStacked() }
            let proj = a.qkvPre ?? a.qkv
            let qkvIn = siteInput(l, .qkv, a.h1.ptr, rows: n, width: c)
            TrainLayers.linearForward(x: qkvIn, ldx: c, w: p.qkvStacked.ptr, bias: nil,
                                      y: proj.ptr, ldy: w, rows: n, inFeatures: c, outFeatures: w)
            if let qBias = p.qBias, let kBias = p.kBias, let vBias = p.vBias {
                Threads.parallelFor(n) { rows in
                    for r in rows {
                        let y = proj.ptr + r * w
                        rqat_axpy(1, qBias.value.ptr, y, qw)
                        rqat_axpy(1, kBias.value.ptr, y + qw, kvw)
                        rqat_axpy(1, vBias.value.ptr, y + qw + kvw, kvw)
                    }
                }
            }
            if let pre = a.qkvPre, let qNorm = p.qNorm, let kNorm = p.kNorm {
                // Qwen3: per-head RMSNorm of q and k (pre → qkv), v copied over.
                TrainLayers.rmsNormForward(x: pre.ptr, ldx: w, w: qNorm.value.ptr, y: a.qkv.ptr, ldy: w,
                                           rstd: a.qRstd!.ptr, rows: n, groups: heads, dim: d, eps: eps)
                TrainLayers.rmsNormForward(x: pre.ptr + qw, ldx: w, w: kNorm.value.ptr, y: a.qkv.ptr + qw, ldy: w,
                                           rstd: a.kRstd!.ptr, rows: n, groups: kvHeads, dim: d, eps: eps)
                let qkv = a.qkv
                Threads.parallelFor(n) { rows in
                    for r in rows { (qkv.ptr + r * w + qw + kvw).update(from: pre.ptr + r * w + qw + kvw, count: kvw) }
                }
            }
            // RoPE on q and k in place, then the head rotation (q heads and k heads are contiguous).
            TrainLayers.ropeForward(x: a.qkv.ptr, ldx: w, rows: n, groups: heads + kvHeads, dim: d,
                                    length: length, cos: s.cos.ptr, sin: s.sin.ptr)
            if let h = headRotation {
                let qkv = a.qkv.ptr
                Threads.parallelFor(n) { rows in for r in rows { h.apply(qkv + r * w, rows: heads + kvHeads, parallel: false) } }
            }
            headTransformForward(l, a.qkv.ptr, ld: w, rows: n)
            cacheTransformForward(l, a.qkv.ptr + qw, ld: w, rows: n, width: 2 * kvw)
            // attn: (N, H*D) = causal softmax(q k^T / sqrt(D)) v
            TrainLayers.attentionForward(q: a.qkv.ptr, ldq: w, k: a.qkv.ptr + qw, ldk: w, v: a.qkv.ptr + qw + kvw,
                                         ldv: w, probs: a.probs.ptr, out: a.attn.ptr, ldo: qw, shape: shape)
            // mid: (N, C) = input + attn o^T
            a.mid.ptr.update(from: a.input.ptr, count: n * c)
            let oIn = siteInput(l, .output, a.attn.ptr, rows: n, width: qw)
            TrainLayers.linearForward(x: oIn, ldx: qw, w: p.oWeight, bias: nil, y: a.mid.ptr, ldy: c,
                                      rows: n, inFeatures: qw, outFeatures: c, accumulate: true)
            // h2: (N, C) = RMSNorm(mid)
            TrainLayers.rmsNormForward(x: a.mid.ptr, ldx: c, w: p.postNorm.value.ptr, y: a.h2.ptr, ldy: c,
                                       rstd: a.rstd2.ptr, rows: n, dim: c, eps: eps)
            // gateUp: (N, 2F); act: (N, F) = silu(gate) * up
            let gateUpIn = siteInput(l, .gateUp, a.h2.ptr, rows: n, width: c)
            TrainLayers.linearForward(x: gateUpIn, ldx: c, w: p.gateUpStacked.ptr, bias: nil, y: a.gateUp.ptr,
                                      ldy: 2 * f, rows: n, inFeatures: c, outFeatures: 2 * f)
            TrainLayers.swigluForward(gateUp: a.gateUp.ptr, out: a.act.ptr, rows: n, width: f)
            // output: (N, C) = mid + act down^T
            output.ptr.update(from: a.mid.ptr, count: n * c)
            let downIn = siteInput(l, .down, a.act.ptr, rows: n, width: f)
            TrainLayers.linearForward(x: downIn, ldx: f, w: p.downWeight, bias: nil, y: output.ptr, ldy: c,
                                      rows: n, inFeatures: f, outFeatures: c, accumulate: true)
        }
    }

    // MARK: - Backward

    /// Backpropagates dL/dlogits (B*T, V) through the last forward, ADDING into every
    /// parameter's `grad`. `dLogits` may be the tensor forward returned (it is not read again).
    package func backward(dLogits: Tensor) {
        guard let s = store else { preconditionFailure("backward without a forward") }
        let cfg = config
        let n = s.rows
        precondition(dLogits.count == n * cfg.vocabSize, "dLogits has shape \(dLogits.shape), expected [\(n), \(cfg.vocabSize)]")
        let c = cfg.hiddenSize, v = cfg.vocabSize
        let dResid = s.dResid.ptr, dH = s.dH.ptr

        // LM head: dhF = dlogits W, dW += dlogits^T hF
        TrainLayers.linearBackward(dy: dLogits.ptr, ldy: v, x: s.hF.ptr, ldx: c, w: lmHead.value.ptr,
                                   dx: dH, lddx: c, accumulateDX: false, dw: lmHead.grad.ptr, dbias: nil,
                                   rows: n, inFeatures: c, outFeatures: v)
        // Final norm: dResid = dL/d(final residual)
        TrainLayers.rmsNormBackward(dy: dH, lddy: c, x: s.final.ptr, ldx: c, w: finalNorm.value.ptr, rstd: s.rstdF.ptr,
                                    dx: dResid, lddx: c, accumulate: false, dw: finalNorm.grad.ptr, rows: n, dim: c)
        blocksBackward(s)
        // Embedding: dE[token] += dL/dx
        s.tokens.withUnsafeBufferPointer { tok in
            TrainLayers.embeddingBackward(tokens: tok.baseAddress!, dx: dResid, dTable: embedding.grad.ptr, rows: n, dim: c)
        }
    }

    /// Backpropagates dL/d(output of `forwardBlocks`) (B*T, C) through the blocks, ADDING into
    /// their parameters' gradients; returns dL/d(input) (it belongs to the activation store).
    package func backwardBlocks(dOutput: UnsafePointer<Float>) -> Tensor {
        guard let s = store else { preconditionFailure("backwardBlocks without a forward") }
        s.dResid.ptr.update(from: dOutput, count: s.rows * config.hiddenSize)
        blocksBackward(s)
        return s.dResid
    }

    /// Every block's backward, last to first: s.dResid holds dL/d(s.final) and becomes
    /// dL/d(s.layers[0].input).
    private func blocksBackward(_ s: Store) {
        let cfg = config
        let n = s.rows, length = s.length
        let c = cfg.hiddenSize, d = cfg.headDim, f = cfg.intermediateSize
        let heads = cfg.numAttentionHeads, kvHeads = cfg.numKeyValueHeads
        let qw = heads * d, kvw = kvHeads * d, w = qw + 2 * kvw
        let shape = TrainLayers.AttentionShape(batch: s.batch, length: length, heads: heads, kvHeads: kvHeads, headDim: d)
        let dResid = s.dResid.ptr, dH = s.dH.ptr
        let quantizer = weightQuantizer

        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            let p = layers[l], a = s.layers[l]
            // The inputs the products read: transformed where a site has an input transform.
            func input(_ site: LinearSite, _ x: Tensor) -> UnsafeMutablePointer<Float> {
                transformed[LinearSiteKey(layer: l, site: site)]?.ptr ?? x.ptr
            }
            // MLP. dResid holds dL/d(output); the residual passes it on unchanged to mid.
            TrainLayers.linearBackwardInput(dy: dResid, ldy: c, w: p.downWeight, dx: s.dAct.ptr, lddx: f,
                                            accumulate: false, rows: n, inFeatures: f, outFeatures: c)
            linearWeightGradient(p.down, quantizer, dy: dResid, ldy: c, x: input(.down, a.act), ldx: f, dbias: nil,
                                 rows: n, inFeatures: f, outFeatures: c)
            transformBackward(l, .down, x: a.act.ptr, dx: s.dAct.ptr, rows: n, width: f)
            TrainLayers.swigluBackward(gateUp: a.gateUp.ptr, dout: s.dAct.ptr, dGateUp: s.dGateUp.ptr, rows: n, width: f)
            TrainLayers.linearBackwardInput(dy: s.dGateUp.ptr, ldy: 2 * f, w: p.gateUpStacked.ptr, dx: dH, lddx: c,
                                            accumulate: false, rows: n, inFeatures: c, outFeatures: 2 * f)
            linearWeightGradient(p.gate, quantizer, dy: s.dGateUp.ptr, ldy: 2 * f, x: input(.gateUp, a.h2), ldx: c,
                                 dbias: nil, rows: n, inFeatures: c, outFeatures: f)
            linearWeightGradient(p.up, quantizer, dy: s.dGateUp.ptr + f, ldy: 2 * f, x: input(.gateUp, a.h2), ldx: c,
                                 dbias: nil, rows: n, inFeatures: c, outFeatures: f)
            transformBackward(l, .gateUp, x: a.h2.ptr, dx: dH, rows: n, width: c)
            TrainLayers.rmsNormBackward(dy: dH, lddy: c, x: a.mid.ptr, ldx: c, w: p.postNorm.value.ptr, rstd: a.rstd2.ptr,
                                        dx: dResid, lddx: c, accumulate: true, dw: p.postNorm.grad.ptr, rows: n, dim: c)
            // Attention. dResid now holds dL/d(mid).
            TrainLayers.linearBackwardInput(dy: dResid, ldy: c, w: p.oWeight, dx: s.dAttn.ptr, lddx: qw,
                                            accumulate: false, rows: n, inFeatures: qw, outFeatures: c)
            linearWeightGradient(p.o, quantizer, dy: dResid, ldy: c, x: input(.output, a.attn), ldx: qw, dbias: nil,
                                 rows: n, inFeatures: qw, outFeatures: c)
            transformBackward(l, .output, x: a.attn.ptr, dx: s.dAttn.ptr, rows: n, width: qw)
            let dqkv = s.dQKV.ptr
            TrainLayers.attentionBackward(dout: s.dAttn.ptr, lddo: qw, q: a.qkv.ptr, ldq: w, k: a.qkv.ptr + qw, ldk: w,
                                          v: a.qkv.ptr + qw + kvw, ldv: w, probs: a.probs.ptr,
                                          dq: dqkv, lddq: w, dk: dqkv + qw, lddk: w, dv: dqkv + qw + kvw, lddv: w,
                                          scratch: s.dProbs.ptr, shape: shape)
            cacheTransformBackward(l, dx: dqkv + qw, ld: w, rows: n, width: 2 * kvw)
            headTransformBackward(l, dqkv: dqkv, ld: w, rows: n)
            if let h = headRotation {
                Threads.parallelFor(n) { rows in for r in rows { h.applyTransposed(dqkv + r * w, rows: heads + kvHeads, parallel: false) } }
            }
            TrainLayers.ropeBackward(dx: dqkv, ldx: w, rows: n, groups: heads + kvHeads, dim: d,
                                     length: length, cos: s.cos.ptr, sin: s.sin.ptr)
            if let pre = a.qkvPre, let qNorm = p.qNorm, let kNorm = p.kNorm {
                TrainLayers.rmsNormBackward(dy: dqkv, lddy: w, x: pre.ptr, ldx: w, w: qNorm.value.ptr, rstd: a.qRstd!.ptr,
                                            dx: dqkv, lddx: w, accumulate: false, dw: qNorm.grad.ptr,
                                            rows: n, groups: heads, dim: d)
                TrainLayers.rmsNormBackward(dy: dqkv + qw, lddy: w, x: pre.ptr + qw, ldx: w, w: kNorm.value.ptr,
                                            rstd: a.kRstd!.ptr, dx: dqkv + qw, lddx: w, accumulate: false,
                                            dw: kNorm.grad.ptr, rows: n, groups: kvHeads, dim: d)
            }
            TrainLayers.linearBackwardInput(dy: dqkv, ldy: w, w: p.qkvStacked.ptr, dx: dH, lddx: c, accumulate: false,
                                            rows: n, inFeatures: c, outFeatures: w)
            let qkvIn = input(.qkv, a.h1)
            linearWeightGradient(p.q, quantizer, dy: dqkv, ldy: w, x: qkvIn, ldx: c,
                                 dbias: p.qBias?.grad.ptr, rows: n, inFeatures: c, outFeatures: qw)
            linearWeightGradient(p.k, quantizer, dy: dqkv + qw, ldy: w, x: qkvIn, ldx: c,
                                 dbias: p.kBias?.grad.ptr, rows: n, inFeatures: c, outFeatures: kvw)
            linearWeightGradient(p.v, quantizer, dy: dqkv + qw + kvw, ldy: w, x: qkvIn, ldx: c,
                                 dbias: p.vBias?.grad.ptr, rows: n, inFeatures: c, outFeatures: kvw)
            transformBackward(l, .qkv, x: a.h1.ptr, dx: dH, rows: n, width: c)
            TrainLayers.rmsNormBackward(dy: dH, lddy: c, x: a.input.ptr, ldx: c, w: p.inputNorm.value.ptr, rstd: a.rstd1.ptr,
                                        dx: dResid, lddx: c, accumulate: true, dw: p.inputNorm.grad.ptr, rows: n, dim: c)
            layerGradientsReady?(l)
        }
    }
}

/// A site's transform for the inference decoder's list: a chain's stages one by one (each
/// InPlace keeps no state, while a chain keeps its intermediates, which decode threads would share).
private func inPlaceStages(_ t: (any TrainableInputTransform)?) -> [any LinearInputTransform] {
    t.map { ChainedTransform.stages(of: $0).map { InPlace($0) } } ?? []
}

/// A training input transform run in place, as the inference decoder's layers run theirs
/// (thread-safe: the cache site calls it from decode threads, so no scratch is shared).
private final class InPlace: LinearInputTransform {
    let transform: any TrainableInputTransform
    init(_ transform: any TrainableInputTransform) { self.transform = transform }
    func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * width) { y in
            transform.forward(x, into: y.baseAddress!, rows: rows, width: width)
            x.update(from: y.baseAddress!, count: rows * width)
        }
    }
}

/// A linear layer of the model: block `layer`, site `site`.
package struct LinearSiteKey: Hashable, Comparable, Sendable {
    package var layer: Int
    package var site: LinearSite
    package init(layer: Int, site: LinearSite) {
        self.layer = layer
        self.site = site
    }
    package static func < (a: Self, b: Self) -> Bool { (a.layer, a.site.rawValue) < (b.layer, b.site.rawValue) }
}

/// A learnable change of a linear site's input during training, x' = T(x; θ), with its backward:
/// an activation fake-quantizer with a learnable clip (straight-through inside the clip), a
/// learnable per-channel scale (SmoothQuant-like), a learnable affine transform (FlatQuant).
package protocol TrainableInputTransform: AnyObject {
    /// θ, trained with the model.
    var parameters: [Parameter] { get }
    /// x: (rows, width) -> y: (rows, width).
    func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int)
    /// Given the x forward saw and dy = dL/dy, writes dx = dL/dx and ADDS dL/dθ into the
    /// parameters' gradients.
    func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int)
}
