import CKernels
import Formats
import Tensors

/// New tokens of one sequence for a forward pass; their positions continue the sequence's cache.
package struct SequenceChunk: Sendable {
    package var sequence: Int
    package var tokens: [Int]
    package init(sequence: Int, tokens: [Int]) {
        self.sequence = sequence
        self.tokens = tokens
    }
}

/// Inference forward of a Llama/Qwen2/Qwen3 decoder over a KV cache.
///
/// One code path serves prefill and decode: a call takes any number of chunks (several prompts,
/// or one new token of each running sequence), stacks their tokens as rows of one (N, C)
/// activation, and runs every projection as a single GEMM over those rows, so the weights are
/// read once per call however many sequences take part.
package final class Decoder {
    package let config: ModelConfig
    package let weights: DecoderWeights
    package let rope: RoPE

    package init(weights: DecoderWeights) {
        self.config = weights.config
        self.weights = weights
        self.rope = RoPE(headDim: weights.config.headDim, theta: Double(weights.config.ropeTheta))
    }

    /// Activation buffers kept between calls: decoding runs hundreds of forwards per second and
    /// fresh multi-megabyte buffers would cost page faults each time. Rows beyond the current
    /// call's are ignored. (A Decoder therefore runs one forward at a time.)
    private final class Workspace {
        let rows: Int
        let x, h, qkv, attn, gateUp, act: Tensor
        init(rows: Int, config c: ModelConfig) {
            self.rows = rows
            x = Tensor(shape: [rows, c.hiddenSize])                   // residual stream
            h = Tensor(shape: [rows, c.hiddenSize])                   // normed input of a sublayer
            qkv = Tensor(shape: [rows, (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim])
            attn = Tensor(shape: [rows, c.numAttentionHeads * c.headDim])
            gateUp = Tensor(shape: [rows, 2 * c.intermediateSize])
            act = Tensor(shape: [rows, c.intermediateSize])
        }
    }
    private var workspace: Workspace?

    private func workspace(rows: Int) -> Workspace {
        if let w = workspace, w.rows >= rows { return w }
        let w = Workspace(rows: max(rows, 8), config: config)
        workspace = w
        return w
    }

    /// A cache sized for `capacities[s]` tokens of sequence s.
    package func makeCache(capacities: [Int], layers: Int? = nil) -> KVCache {
        KVCache(config: config, capacities: capacities, layers: layers)
    }

    /// Runs the chunks' tokens through the model, appending their keys and values to `cache`.
    /// Returns logits (chunks, V) for the last token of each chunk, or (N, V) for every token
    /// when `allLogits` is set, or for the stacked token rows `logitRows` (in that order) when
    /// given — the LM head is then computed for those rows only.
    package func forward(_ chunks: [SequenceChunk], cache: KVCache, allLogits: Bool = false,
                        logitRows: [Int]? = nil) -> Tensor {
        let c = config.hiddenSize

        // Row bookkeeping: which sequence and position each stacked token has.
        var rowSequence: [Int] = [], rowPosition: [Int] = [], tokens: [Int] = []
        for chunk in chunks {
            let start = cache.length[chunk.sequence]
            precondition(start + chunk.tokens.count <= cache.capacity[chunk.sequence],
                         "sequence \(chunk.sequence) exceeds its cache capacity \(cache.capacity[chunk.sequence])")
            for (i, t) in chunk.tokens.enumerated() {
                precondition(t >= 0 && t < config.vocabSize, "token id \(t) outside the vocabulary (\(config.vocabSize))")
                rowSequence.append(chunk.sequence)
                rowPosition.append(start + i)
                tokens.append(t)
            }
        }
        let n = tokens.count
        rope.reserve((rowPosition.max() ?? 0) + 1)

        let x = workspace(rows: n).x
        for (r, t) in tokens.enumerated() {
            x.row(r).update(from: weights.embedding.row(t), count: c)
        }

        let layout = RowLayout(sequence: rowSequence, position: rowPosition)
        for l in weights.layers.indices {
            runLayer(l, x: x, rows: n, layout: layout, cache: cache, cacheLayer: l)
        }
        for chunk in chunks { cache.advance(sequence: chunk.sequence, by: chunk.tokens.count) }

        // Final norm and LM head on the rows whose logits are wanted.
        var wanted: [Int] = []
        if let logitRows {
            precondition(logitRows.allSatisfy { $0 >= 0 && $0 < n }, "logit rows outside the \(n) token rows")
            wanted = logitRows
        } else if allLogits {
            wanted = Array(0..<n)
        } else {
            var end = 0
            for chunk in chunks { end += chunk.tokens.count; wanted.append(end - 1) }
        }
        let last = Tensor(shape: [wanted.count, c])
        for (i, r) in wanted.enumerated() {
            rqat_rmsnorm(x.row(r), weights.finalNorm.ptr, last.row(i), c, config.rmsNormEps)
        }
        let logits = Tensor(shape: [wanted.count, config.vocabSize])
        weights.lmHead.apply(wanted.count, last, into: logits)
        return logits
    }

    /// Which sequence and position each stacked row belongs to.
    package struct RowLayout {
        package var sequence: [Int]
        package var position: [Int]
        package init(sequence: [Int], position: [Int]) {
            self.sequence = sequence
            self.position = position
        }
    }

    /// One decoder block on the first `rows` rows of the residual stream x (updated in place),
    /// its keys and values going to `cacheLayer` of `cache`. With `stopAfter`, the block stops
    /// once that site's input is prepared (its transforms applied, its input hooks called: PTQ
    /// calibration observes there), and x is then partial.
    package func runLayer(_ l: Int, x: Tensor, rows n: Int, layout: RowLayout, cache: KVCache, cacheLayer: Int,
                         stopAfter: LinearSite? = nil) {
        let layer = weights.layers[l], f = config.intermediateSize
        let ws = workspace(rows: n)
        let h = ws.h, qkv = ws.qkv, attn = ws.attn, gateUp = ws.gateUp, act = ws.act
        rope.reserve((layout.position.max() ?? 0) + 1)

        rmsNormRows(n, x, layer.inputNorm, into: h)
        layer.qkv.prepareInput(n, h)
        if stopAfter == .qkv { return }
        layer.qkv.multiply(n, h, into: qkv)
        prepareQK(n, qkv, layer: layer, rowSequence: layout.sequence, rowPosition: layout.position, cache: cache, layerIndex: cacheLayer)
        attend(n, qkv, into: attn, rowSequence: layout.sequence, rowPosition: layout.position, cache: cache, layerIndex: cacheLayer)
        layer.output.prepareInput(n, attn)
        if stopAfter == .output { return }
        layer.output.multiply(n, attn, into: x, accumulate: true)

        rmsNormRows(n, x, layer.postAttentionNorm, into: h)
        layer.gateUp.prepareInput(n, h)
        if stopAfter == .gateUp { return }
        layer.gateUp.multiply(n, h, into: gateUp)
        Threads.parallelFor(n) { rows in
            for r in rows { rqat_silu_mul(gateUp.row(r), gateUp.row(r) + f, act.row(r), f) }
        }
        layer.down.prepareInput(n, act)
        if stopAfter == .down { return }
        layer.down.multiply(n, act, into: x, accumulate: true)
    }

    /// The residual stream after the embedding for these sequences (rows stacked in order,
    /// positions from 0) and its row layout: the starting point of layer-by-layer calibration.
    package func embed(_ sequences: [[Int]]) -> (x: Tensor, layout: RowLayout) {
        let c = config.hiddenSize
        var layout = RowLayout(sequence: [], position: [])
        for (s, tokens) in sequences.enumerated() {
            layout.sequence += Array(repeating: s, count: tokens.count)
            layout.position += Array(0..<tokens.count)
        }
        let x = Tensor(shape: [layout.sequence.count, c])
        for (r, t) in sequences.joined().enumerated() {
            precondition(t >= 0 && t < config.vocabSize, "token id \(t) outside the vocabulary (\(config.vocabSize))")
            x.row(r).update(from: weights.embedding.row(t), count: c)
        }
        return (x, layout)
    }

    // MARK: - Sublayers

    /// h[r] = RMSNorm(x[r]) * w for the first n rows. x, h: (N, C).
    func rmsNormRows(_ n: Int, _ x: Tensor, _ w: Tensor, into h: Tensor) {
        let c = x.shape[1], eps = config.rmsNormEps
        Threads.parallelFor(n) { rows in
            for r in rows { rqat_rmsnorm(x.row(r), w.ptr, h.row(r), c, eps) }
        }
    }

    /// Per row: q/k head norms (Qwen3), RoPE on q and k (then the head rotation and the key
    /// transform, if any), the value transform (if any), then k and v through the cache
    /// transforms into the cache.
    /// qkv: (N, H*D + 2*KV*D).
    func prepareQK(_ n: Int, _ qkv: Tensor, layer: DecoderLayerWeights, rowSequence: [Int], rowPosition: [Int],
                   cache: KVCache, layerIndex l: Int) {
        let d = config.headDim, heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads
        let eps = config.rmsNormEps
        Threads.parallelFor(n) { rows in
            for r in rows {
                let q = qkv.row(r), k = q + heads * d, v = k + kvHeads * d
                if let qNorm = layer.qNorm, let kNorm = layer.kNorm {
                    for hd in 0..<heads { rqat_rmsnorm(q + hd * d, qNorm.ptr, q + hd * d, d, eps) }
                    for hd in 0..<kvHeads { rqat_rmsnorm(k + hd * d, kNorm.ptr, k + hd * d, d, eps) }
                }
                let pos = rowPosition[r], s = rowSequence[r]
                rope.row(pos) { cos, sin in
                    for hd in 0..<heads { rqat_rope_rotate_half(q + hd * d, cos, sin, d) }
                    for hd in 0..<kvHeads { rqat_rope_rotate_half(k + hd * d, cos, sin, d) }
                }
                // q heads then k heads are contiguous: one rotation of heads + kvHeads rows.
                layer.headRotation?.apply(q, rows: heads + kvHeads, parallel: false)
                if let key = layer.keyTransform { key.applyInverseTranspose(q, heads: heads); key.apply(k, heads: kvHeads) }
                layer.valueTransform?.apply(v, heads: kvHeads)
                for t in layer.cacheTransforms { t.transform(k, rows: 1, width: 2 * kvHeads * d) }
                for hd in 0..<kvHeads {
                    (cache.keys(sequence: s, layer: l, head: hd) + pos * d).update(from: k + hd * d, count: d)
                    (cache.values(sequence: s, layer: l, head: hd) + pos * d).update(from: v + hd * d, count: d)
                }
            }
        }
    }

    /// Causal attention of every row against the cache up to the row's own position, one
    /// (row, KV head) item at a time: query heads g*G ..< (g+1)*G share KV head g (grouped-query
    /// attention, G = H / KV), so each item reads its keys and values once for its G heads.
    /// qkv: (N, H*D + ...), out: (N, H*D).
    func attend(_ n: Int, _ qkv: Tensor, into out: Tensor, rowSequence: [Int], rowPosition: [Int],
                cache: KVCache, layerIndex l: Int) {
        let d = config.headDim, kvHeads = config.numKeyValueHeads
        let group = config.numAttentionHeads / kvHeads
        let scale = 1 / Float(d).squareRoot()
        let maxLength = (rowPosition.max() ?? 0) + 1
        Threads.parallelFor(n * kvHeads) { items in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: group * maxLength)
            defer { scores.deallocate() }
            for item in items {
                let r = item / kvHeads, g = item % kvHeads
                let s = rowSequence[r], length = rowPosition[r] + 1
                rqat_attend_group(qkv.row(r) + g * group * d, group,
                                  cache.keys(sequence: s, layer: l, head: g), cache.values(sequence: s, layer: l, head: g),
                                  length, d, scale, scores, out.row(r) + g * group * d)
            }
        }
    }
}
