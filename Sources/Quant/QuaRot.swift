import Formats
import Model
import Tensors

/// QuaRot's rotation of a full-precision decoder (Ashkboos et al., 2024): a model computing the
/// same function whose weights and activations have their outliers spread by orthogonal
/// Hadamard rotations, so that they quantize better. No quantization happens here.
///
/// With y = x Wᵀ for a weight W of shape (out, in), the steps are:
///
/// 1. Norm folding. RMSNorm(x) · diag(g) · Wᵀ = RMSNorm₁(x) · (W diag(g))ᵀ, so every RMSNorm
///    scale moves into the layers reading its output: input_layernorm into q, k, v;
///    post_attention_layernorm into gate, up; the final norm into the LM head. The norms' scales
///    become 1. (Qwen3's per-head q/k norms act after the projection and stay as they are.)
/// 2. Residual rotation by Q = diag(s) H_d / sqrt(d), s random ±1 drawn from `seed`, d the
///    hidden size; Q is orthogonal. The residual stream becomes x Q: embedding E → E Q; the
///    layers reading it (q, k, v, gate, up, LM head) W → W Q, since x Q (W Q)ᵀ = x Wᵀ; the
///    layers writing to it (o_proj, down_proj) W → Qᵀ W, since x (Qᵀ W)ᵀ = (x Wᵀ) Q. A unit-scale
///    RMSNorm commutes with Q, which preserves the norm: RMSNorm₁(x Q) = RMSNorm₁(x) Q.
///    A tied LM head is untied: the embedding is rotated as E Q, while the LM head gets its own
///    copy E diag(g_final) Q, so the returned model's config has `tieWordEmbeddings == false`
///    (and it holds the vocabulary matrix twice).
/// 3. Online Hadamard before down_proj: W_down → W_down H_f (H_f = H / sqrt(f), f the
///    intermediate size), and the down layer's input rows x → x H_f at run time (an
///    `OnlineHadamard` appended to its `inputTransforms`): (x H_f)(W_down H_f)ᵀ = x Wᵀ.
/// 4. Values per head: W_v → blockdiag(H_D)ᵀ W_v (and its bias v → v blockdiag(H_D)), so each
///    head's values become v H_D (H_D = H / sqrt(D), D the head dim), and
///    W_o → W_o blockdiag(H_D). Attention mixes each head's value rows linearly, so its output
///    is (Σ p v) H_D per head, which o_proj undoes. (Every KV head uses the same H_D, so grouped
///    query attention is unaffected.)
///
/// All in fp32. Q and H_f are built as dense matrices from `HadamardTransform` (its `apply` on
/// the identity's rows; 1.3 MB and 9.4 MB for SmolLM2) and multiplied in with OpenBLAS, fused
/// with the norm scales (W diag(g) Q in one product): the fast transform's row loops took 40 s on
/// SmolLM2 in a debug build, the products about a second. H_D acts through `HadamardTransform`
/// on the rows of the (transposed) value and output weights. Sizes need a Hadamard construction: SmolLM2's
/// 576 = 36 x 16, 1536 = 12 x 128 and 64 do.
package enum QuaRot {
    /// What to rotate: the residual stream (with norm folding) always; the rest optional.
    package struct Options: Sendable, Equatable {
        /// Step 3: H_f on down_proj's input, folded into W_down, applied online.
        package var onlineDownHadamard: Bool
        /// Step 4: H_D on each value head, folded into v_proj and o_proj.
        package var valueHeads: Bool
        package init(onlineDownHadamard: Bool = true, valueHeads: Bool = true) {
            self.onlineDownHadamard = onlineDownHadamard
            self.valueHeads = valueHeads
        }
    }

    /// The random signs s of Q = diag(s) H / sqrt(d) for `seed`: d values ±1.
    package static func residualSigns(size: Int, seed: UInt64) -> [Float] {
        var rng = SeededRNG(seed: seed)
        return (0..<size).map { _ in rng.next() & 1 == 0 ? 1 : -1 }
    }

    /// The rotated model: new tensors (the input is not changed), the LM head untied, the
    /// online Hadamard installed on each down layer (when `options.onlineDownHadamard`).
    /// The input's input transforms, hooks and cache transforms are not carried over.
    package static func rotate(_ weights: DecoderWeights, seed: UInt64, options: Options = Options()) throws -> DecoderWeights {
        var config = weights.config
        let tensors = try rotate(config: config, tensors: namedCopies(weights), seed: seed, options: options)
        config.tieWordEmbeddings = false
        let rotated = try DecoderWeights(config: config, source: InMemoryWeights(tensors, path: "<quarot>"))
        if options.onlineDownHadamard {
            let online = try OnlineHadamard(size: config.intermediateSize)
            for layer in rotated.layers { layer.down.inputTransforms.append(online) }
        }
        return rotated
    }

    /// The rotation on fp32 tensors by Hugging Face name (those `DecoderArchitecture(config)`
    /// lists; a tied model's LM head may be absent). Returns every tensor of the untied model,
    /// `lm_head.weight` included. Matrices are replaced by new tensors, but norms (set to 1) and the
    /// v bias are changed in place: pass copies to keep the originals.
    /// With `options.onlineDownHadamard` the result expects x → x H_f (`OnlineHadamard`) on each
    /// down_proj input.
    package static func rotate(config: ModelConfig, tensors input: [String: Tensor], seed: UInt64,
                               options: Options = Options()) throws -> [String: Tensor] {
        var t = input
        let arch = DecoderArchitecture(config)
        let c = config.hiddenSize, f = config.intermediateSize, d = config.headDim
        func get(_ role: TensorRole, _ layer: Int? = nil) throws -> Tensor {
            let spec = arch.spec(role, layer: layer)
            guard let x = t[spec.name] else { throw FormatError("<quarot>", "missing tensor \(spec.name)") }
            guard x.shape == spec.shape else {
                throw FormatError("<quarot>", "tensor \(spec.name) has shape \(x.shape), expected \(spec.shape)")
            }
            return x
        }

        // 1 and 2. Norm folding and the residual rotation, as one product per weight:
        // reading weights W → W diag(g) Q, writing weights W → Qᵀ W, E → E Q.
        let q = try residualRotation(size: c, seed: seed)
        func reading(_ w: Tensor, norm g: Tensor) -> Tensor { multiply(w, scaledRows(q, by: g)) }
        let embedding = try get(.embedding)
        let lmName = DecoderArchitecture.name(.lmHead)
        let lmHead = config.tieWordEmbeddings || t[lmName] == nil ? embedding : try get(.lmHead)
        let finalNorm = try get(.finalNorm)
        t[lmName] = reading(lmHead, norm: finalNorm)
        t[DecoderArchitecture.name(.embedding)] = multiply(embedding, q)
        setOnes(finalNorm)
        let hf = options.onlineDownHadamard ? try dense(HadamardTransform(size: f)) : nil
        for l in 0..<config.numHiddenLayers {
            func put(_ role: TensorRole, _ x: Tensor) { t[arch.spec(role, layer: l).name] = x }
            let inputNorm = try get(.inputNorm, l), postNorm = try get(.postAttentionNorm, l)
            for role in [TensorRole.q, .k, .v] { put(role, reading(try get(role, l), norm: inputNorm)) }
            for role in [TensorRole.gate, .up] { put(role, reading(try get(role, l), norm: postNorm)) }
            setOnes(inputNorm)
            setOnes(postNorm)
            put(.o, multiply(q, try get(.o, l), transposeA: true))
            // 3. W_down → Qᵀ W_down H_f.
            let down = multiply(q, try get(.down, l), transposeA: true)
            put(.down, hf.map { multiply(down, $0) } ?? down)
        }

        // 4. Values per head: W_v → blockdiag(H_D)ᵀ W_v, b_v → b_v blockdiag(H_D), W_o → W_o blockdiag(H_D).
        if options.valueHeads {
            let hd = try HadamardTransform(size: d)
            for l in 0..<config.numHiddenLayers {
                let v = try get(.v, l)
                // (blockdiag(H)ᵀ W_v)ᵀ = W_vᵀ blockdiag(H): each row of W_vᵀ, head chunk by chunk.
                let vt = transposed(v)
                hd.apply(vt.ptr, rows: vt.count / d)
                t[arch.spec(.v, layer: l).name] = transposed(vt)
                if arch.has(.vBias) {
                    let b = try get(.vBias, l)
                    hd.apply(b.ptr, rows: b.count / d)
                }
                let o = try get(.o, l)
                hd.apply(o.ptr, rows: o.count / d)
            }
        }
        return t
    }

    /// Copies of the weights' tensors by Hugging Face name (stacked sites split into their parts).
    package static func namedCopies(_ weights: DecoderWeights) -> [String: Tensor] {
        let config = weights.config, arch = DecoderArchitecture(config)
        var out: [String: Tensor] = [:]
        out[DecoderArchitecture.name(.embedding)] = copy(weights.embedding)
        out[DecoderArchitecture.name(.finalNorm)] = copy(weights.finalNorm)
        if !config.tieWordEmbeddings { out[DecoderArchitecture.name(.lmHead)] = copy(weights.lmHead.weight.dense) }
        for (l, layer) in weights.layers.enumerated() {
            func put(_ role: TensorRole, _ x: Tensor) { out[DecoderArchitecture.name(role, layer: l)] = x }
            put(.inputNorm, copy(layer.inputNorm))
            put(.postAttentionNorm, copy(layer.postAttentionNorm))
            if let n = layer.qNorm { put(.qNorm, copy(n)) }
            if let n = layer.kNorm { put(.kNorm, copy(n)) }
            for site in LinearSite.allCases {
                let linear = layer.linear(site)
                let w = linear.weight.dense, width = w.shape[1]
                for (i, part) in arch.stackedRows(site).enumerated() {
                    put(part.role, copy(w.ptr + part.rowStart * width, shape: [part.rows, width]))
                    if let bias = linear.bias, i < site.biasParts.count {
                        put(site.biasParts[i], copy(bias.ptr + part.rowStart, shape: [part.rows]))
                    }
                }
            }
        }
        return out
    }

    /// Q = diag(s) H / sqrt(d) as a dense (d, d) matrix, s = `residualSigns(size: d, seed:)`:
    /// row i is e_i Q, the fast transform of s_i e_i.
    package static func residualRotation(size: Int, seed: UInt64) throws -> Tensor {
        let signs = residualSigns(size: size, seed: seed)
        let q = Tensor(shape: [size, size])
        for i in 0..<size { q.ptr[i * size + i] = signs[i] }
        try HadamardTransform(size: size).apply(q.ptr, rows: size)
        return q
    }

    /// H / sqrt(n) of the transform as a dense (n, n) matrix (its `apply` on the identity's rows).
    static func dense(_ h: HadamardTransform) -> Tensor {
        let n = h.size, out = Tensor(shape: [n, n])
        for i in 0..<n { out.ptr[i * n + i] = 1 }
        h.apply(out.ptr, rows: n)
        return out
    }

    /// a b, or aᵀ b, as a new tensor (OpenBLAS: the rotations of a 135M model take seconds even
    /// in a debug build). a: (m, k) or (k, m), b: (k, n).
    static func multiply(_ a: Tensor, _ b: Tensor, transposeA: Bool = false) -> Tensor {
        let m = transposeA ? a.shape[1] : a.shape[0], k = transposeA ? a.shape[0] : a.shape[1], n = b.shape[1]
        precondition(b.shape[0] == k, "QuaRot: product of \(a.shape)\(transposeA ? "ᵀ" : "") and \(b.shape)")
        let out = Tensor(shape: [m, n])
        Gemm.sgemm(transA: transposeA, m: m, n: n, k: k, a: a.ptr, lda: a.shape[1], b: b.ptr, ldb: n, c: out.ptr, ldc: n)
        return out
    }

    /// diag(g) x: row i of x times g[i], as a new tensor.
    static func scaledRows(_ x: Tensor, by g: Tensor) -> Tensor {
        let cols = x.shape[1]
        precondition(g.count == x.shape[0], "QuaRot: norm of \(g.count) for a matrix of \(x.shape[0]) rows")
        let out = Tensor(shape: x.shape)
        for r in 0..<x.shape[0] {
            let src = x.ptr + r * cols, dst = out.ptr + r * cols, scale = g.ptr[r]
            for j in 0..<cols { dst[j] = scale * src[j] }
        }
        return out
    }

    static func copy(_ x: Tensor) -> Tensor { copy(x.ptr, shape: x.shape) }

    /// A tensor of `shape` holding the values at `start`.
    static func copy(_ start: UnsafePointer<Float>, shape: [Int]) -> Tensor {
        let out = Tensor(shape: shape)
        out.ptr.update(from: start, count: out.count)
        return out
    }

    static func transposed(_ x: Tensor) -> Tensor {
        let rows = x.shape[0], cols = x.shape[1]
        let out = Tensor(shape: [cols, rows])
        for r in 0..<rows {
            let src = x.ptr + r * cols
            for c in 0..<cols { out.ptr[c * rows + r] = src[c] }
        }
        return out
    }

    static func setOnes(_ x: Tensor) {
        for i in 0..<x.count { x.ptr[i] = 1 }
    }
}
