import CKernels
import Tensors

/// Forward and backward passes of the decoder's layers for training, llm.c style: plain
/// functions on raw pointers, each forward paired with its backward, no autograd.
///
/// Notation: B batch, T length, N = B*T rows (row r is position r % T of sequence r / T),
/// C hidden, H query heads, KV key/value heads, D head width, F MLP width, V vocabulary.
/// Row-major matrices are passed as (pointer, leading dimension = row stride in elements), so
/// callers can point into column slices of a wider buffer (q, k and v share one (N, (H+2KV)D)
/// buffer). Backward functions ACCUMULATE (+=) into weight gradients; input gradients are
/// written, or added where an `accumulate` flag says so (the residual stream).
package enum TrainLayers {

    // MARK: - Linear

    /// y = x W^T (+ b), or y += x W^T (+ b) with `accumulate`.
    /// x: (N, in) stride ldx; W: (out, in) contiguous; b: (out); y: (N, out) stride ldy.
    package static func linearForward(x: UnsafePointer<Float>, ldx: Int, w: UnsafePointer<Float>,
                                     bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, ldy: Int,
                                     rows n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
        Gemm.sgemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x, lda: ldx, b: w, ldb: inFeatures,
                   beta: accumulate ? 1 : 0, c: y, ldc: ldy)
        if let bias {
            Threads.parallelFor(n) { rows in
                for r in rows { rqat_axpy(1, bias, y + r * ldy, outFeatures) }
            }
        }
    }

    /// Backward of `linearForward`: dx = dy W (or dx += dy W with `accumulateDX`),
    /// dW += dy^T x, db += sum over rows of dy.
    /// dy: (N, out) stride ldy; x: (N, in) stride ldx; W, dW: (out, in); dx: (N, in) stride lddx.
    package static func linearBackward(dy: UnsafePointer<Float>, ldy: Int, x: UnsafePointer<Float>, ldx: Int,
                                      w: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, lddx: Int,
                                      accumulateDX: Bool, dw: UnsafeMutablePointer<Float>,
                                      dbias: UnsafeMutablePointer<Float>?,
                                      rows n: Int, inFeatures: Int, outFeatures: Int) {
        if let dx {
            linearBackwardInput(dy: dy, ldy: ldy, w: w, dx: dx, lddx: lddx, accumulate: accumulateDX,
                                rows: n, inFeatures: inFeatures, outFeatures: outFeatures)
        }
        linearBackwardWeight(dy: dy, ldy: ldy, x: x, ldx: ldx, dw: dw, dbias: dbias,
                             rows: n, inFeatures: inFeatures, outFeatures: outFeatures)
    }

    /// dx = dy W (or dx += dy W). dy: (N, out) stride ldy; W: (out, in); dx: (N, in) stride lddx.
    package static func linearBackwardInput(dy: UnsafePointer<Float>, ldy: Int, w: UnsafePointer<Float>,
                                           dx: UnsafeMutablePointer<Float>, lddx: Int, accumulate: Bool,
                                           rows n: Int, inFeatures: Int, outFeatures: Int) {
        Gemm.sgemm(m: n, n: inFeatures, k: outFeatures, a: dy, lda: ldy, b: w, ldb: inFeatures,
                   beta: accumulate ? 1 : 0, c: dx, ldc: lddx)
    }

    /// dW += dy^T x (dW = dy^T x when `accumulate` is false), db += sum over rows of dy.
    /// dy: (N, out) stride ldy; x: (N, in) stride ldx.
    package static func linearBackwardWeight(dy: UnsafePointer<Float>, ldy: Int, x: UnsafePointer<Float>, ldx: Int,
                                            dw: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                                            rows n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = true) {
        Gemm.sgemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: dy, lda: ldy, b: x, ldb: ldx,
                   beta: accumulate ? 1 : 0, c: dw, ldc: inFeatures)
        if let dbias {
            // Threads own disjoint column slices, so the sums need no reduction.
            Threads.parallelFor(outFeatures) { cols in
                let lo = cols.lowerBound, width = cols.count
                for r in 0..<n { rqat_axpy(1, dy + r * ldy + lo, dbias + lo, width) }
            }
        }
    }

    // MARK: - RMSNorm

    /// y = x / sqrt(mean(x^2) + eps) * w for `groups` vectors of `dim` per row (groups = 1 for the
    /// hidden norms; H or KV for Qwen3's per-head q/k norms). Vector (r, g) is at x + r*ldx + g*dim.
    /// rstd: (N, groups) contiguous, saved for backward. x and y must not overlap.
    package static func rmsNormForward(x: UnsafePointer<Float>, ldx: Int, w: UnsafePointer<Float>,
                                      y: UnsafeMutablePointer<Float>, ldy: Int, rstd: UnsafeMutablePointer<Float>,
                                      rows n: Int, groups: Int = 1, dim: Int, eps: Float) {
        Threads.parallelFor(n) { rows in
            for r in rows {
                for g in 0..<groups {
                    rstd[r * groups + g] = rqat_rmsnorm(x + r * ldx + g * dim, w, y + r * ldy + g * dim, dim, eps)
                }
            }
        }
    }

    /// Backward of `rmsNormForward`: dx = (or += with `accumulate`) dL/dx; dw += dL/dw.
    /// dy and dx may be the same buffer (in place, then `accumulate` must be false).
    package static func rmsNormBackward(dy: UnsafePointer<Float>, lddy: Int, x: UnsafePointer<Float>, ldx: Int,
                                       w: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                       dx: UnsafeMutablePointer<Float>, lddx: Int, accumulate: Bool,
                                       dw: UnsafeMutablePointer<Float>,
                                       rows n: Int, groups: Int = 1, dim: Int) {
        // dw is a sum over all vectors: each thread sums its rows into its own partial row.
        let parts = max(1, min(Threads.count, n))
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: parts * dim)
        defer { partial.deallocate() }
        partial.initialize(repeating: 0, count: parts * dim)
        Threads.parallelFor(parts) { ps in
            for p in ps {
                let lo = n * p / parts, hi = n * (p + 1) / parts
                for r in lo..<hi {
                    for g in 0..<groups {
                        rqat_rmsnorm_backward(dy + r * lddy + g * dim, x + r * ldx + g * dim, w, rstd[r * groups + g],
                                              dim, dx + r * lddx + g * dim, accumulate ? 1 : 0, partial + p * dim)
                    }
                }
            }
        }
        for p in 0..<parts { rqat_axpy(1, partial + p * dim, dw, dim) }
    }

    // MARK: - RoPE

    /// In place, rotate-half RoPE on `groups` head vectors of width `dim` per row; row r has
    /// position r % length. cos, sin: (length, dim/2).
    package static func ropeForward(x: UnsafeMutablePointer<Float>, ldx: Int, rows n: Int, groups: Int, dim: Int,
                                   length: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        let half = dim / 2
        Threads.parallelFor(n) { rows in
            for r in rows {
                let t = r % length
                for g in 0..<groups { rqat_rope_rotate_half(x + r * ldx + g * dim, cos + t * half, sin + t * half, dim) }
            }
        }
    }

    /// Backward of `ropeForward`, in place on the gradient: the transpose of a rotation is the
    /// rotation by the negative angle.
    package static func ropeBackward(dx: UnsafeMutablePointer<Float>, ldx: Int, rows n: Int, groups: Int, dim: Int,
                                    length: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        let half = dim / 2
        Threads.parallelFor(n) { rows in
            for r in rows {
                let t = r % length
                for g in 0..<groups {
                    rqat_rope_rotate_half_inverse(dx + r * ldx + g * dim, cos + t * half, sin + t * half, dim)
                }
            }
        }
    }

    // MARK: - Attention

    /// The shape of one causal GQA attention call.
    package struct AttentionShape {
        package var batch, length, heads, kvHeads, headDim: Int
        package init(batch: Int, length: Int, heads: Int, kvHeads: Int, headDim: Int) {
            self.batch = batch; self.length = length; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        }
        /// Floats of the saved probabilities (and of the backward scratch): B*H*T*T.
        package var probsCount: Int { batch * heads * length * length }
    }

    /// Causal scaled-dot-product attention with grouped-query heads (query head h reads KV head
    /// h / (H/KV)), per (batch, head) with sgemm for Q K^T and P V.
    /// q: (B, T, H*D) stride ldq; k, v: (B, T, KV*D) strides ldk, ldv; out: (B, T, H*D) stride ldo.
    /// probs: (B, H, T, T), the softmax probabilities, saved for backward (zero above the diagonal).
    ///
    /// Design choice: the probabilities are STORED, not recomputed in backward. That costs
    /// B*H*T*T floats per layer (8 MB per layer at B=8, H=4, T=256; 32 MB at T=512), which is fine
    /// for our shapes (T <= 512); beyond that a flash-style recompute would be the way.
    package static func attentionForward(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                        v: UnsafePointer<Float>, ldv: Int, probs: UnsafeMutablePointer<Float>,
                                        out: UnsafeMutablePointer<Float>, ldo: Int, shape s: AttentionShape) {
        let t = s.length, d = s.headDim, group = s.heads / s.kvHeads
        let scale = 1 / Float(d).squareRoot()
        // Scores S = scale * Q K^T for each (b, h), only the causal lower block-triangle.
        forEachHeadBlock(s) { b, h, r0, r1 in
            let kvh = h / group
            Gemm.sgemm(transB: true, m: r1 - r0, n: r1, k: d, alpha: scale,
                       a: q + (b * t + r0) * ldq + h * d, lda: ldq,
                       b: k + b * t * ldk + kvh * d, ldb: ldk,
                       c: probs + ((b * s.heads + h) * t + r0) * t, ldc: t)
        }
        // Row softmax over positions 0...i; zero above the diagonal.
        Threads.parallelFor(s.batch * s.heads * t) { items in
            for item in items {
                let i = item % t
                let row = probs + item * t
                rqat_softmax_fast(row, i + 1)
                if i + 1 < t { (row + i + 1).update(repeating: 0, count: t - i - 1) }
            }
        }
        // out = P V.
        forEachHeadBlock(s) { b, h, r0, r1 in
            let kvh = h / group
            Gemm.sgemm(m: r1 - r0, n: d, k: r1,
                       a: probs + ((b * s.heads + h) * t + r0) * t, lda: t,
                       b: v + b * t * ldv + kvh * d, ldb: ldv,
                       c: out + (b * t + r0) * ldo + h * d, ldc: ldo)
        }
    }

    /// Backward of `attentionForward`. dout: (B, T, H*D) stride lddo. Writes dq (B, T, H*D),
    /// dk and dv (B, T, KV*D) (overwritten, not accumulated). scratch: B*H*T*T floats (dP, then dS).
    package static func attentionBackward(dout: UnsafePointer<Float>, lddo: Int,
                                         q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                         v: UnsafePointer<Float>, ldv: Int, probs: UnsafePointer<Float>,
                                         dq: UnsafeMutablePointer<Float>, lddq: Int,
                                         dk: UnsafeMutablePointer<Float>, lddk: Int,
                                         dv: UnsafeMutablePointer<Float>, lddv: Int,
                                         scratch: UnsafeMutablePointer<Float>, shape s: AttentionShape) {
        let t = s.length, d = s.headDim, group = s.heads / s.kvHeads
        let scale = 1 / Float(d).squareRoot()
        let n = s.batch * t, kvWidth = s.kvHeads * d
        // dk and dv collect contributions from every query head of their group.
        Threads.parallelFor(n) { rows in
            for r in rows {
                (dk + r * lddk).update(repeating: 0, count: kvWidth)
                (dv + r * lddv).update(repeating: 0, count: kvWidth)
            }
        }
        // dP = dO V^T (lower block-triangle), dV += P^T dO.
        forEachHeadBlock(s) { b, h, r0, r1 in
            let kvh = h / group
            Gemm.sgemm(transB: true, m: r1 - r0, n: r1, k: d,
                       a: dout + (b * t + r0) * lddo + h * d, lda: lddo,
                       b: v + b * t * ldv + kvh * d, ldb: ldv,
                       c: scratch + ((b * s.heads + h) * t + r0) * t, ldc: t)
            // Rows r0..<r1 of P touch keys 0..<r1 only.
            Gemm.sgemm(transA: true, m: r1, n: d, k: r1 - r0,
                       a: probs + ((b * s.heads + h) * t + r0) * t, lda: t,
                       b: dout + (b * t + r0) * lddo + h * d, ldb: lddo, beta: 1,
                       c: dv + b * t * lddv + kvh * d, ldc: lddv)
        }
        // dS = scale * P * (dP - rowsum(P * dP)), zero above the diagonal.
        Threads.parallelFor(s.batch * s.heads * t) { items in
            for item in items {
                let i = item % t
                let g = scratch + item * t
                rqat_softmax_backward(probs + item * t, g, i + 1, scale)
                if i + 1 < t { (g + i + 1).update(repeating: 0, count: t - i - 1) }
            }
        }
        // dQ = dS K, dK += dS^T Q.
        forEachHeadBlock(s) { b, h, r0, r1 in
            let kvh = h / group
            let ds = scratch + ((b * s.heads + h) * t + r0) * t
            Gemm.sgemm(m: r1 - r0, n: d, k: r1, a: ds, lda: t,
                       b: k + b * t * ldk + kvh * d, ldb: ldk,
                       c: dq + (b * t + r0) * lddq + h * d, ldc: lddq)
            Gemm.sgemm(transA: true, m: r1, n: d, k: r1 - r0, a: ds, lda: t,
                       b: q + (b * t + r0) * ldq + h * d, ldb: ldq, beta: 1,
                       c: dk + b * t * lddk + kvh * d, ldc: lddk)
        }
    }

    /// Query rows are processed in blocks so the causal mask skips (most of) the upper triangle:
    /// block [r0, r1) of queries only needs keys [0, r1).
    static let attentionBlock = 64

    /// Runs `body` for every (batch, head) and query block. Tasks are (batch, KV head) groups
    /// spread over our threads, each running its query heads and blocks in order with
    /// single-threaded sgemm: the blocks are small (64 x T x D), and a group owns every output
    /// it touches, including the dK/dV rows its query heads accumulate into.
    @inline(__always)
    static func forEachHeadBlock(_ s: AttentionShape, _ body: (_ b: Int, _ h: Int, _ r0: Int, _ r1: Int) -> Void) {
        let group = s.heads / s.kvHeads
        Threads.parallelForWithSerialBLAS(s.batch * s.kvHeads) { tasks in
            for task in tasks {
                let b = task / s.kvHeads, kvh = task % s.kvHeads
                for h in (kvh * group)..<((kvh + 1) * group) {
                    var r0 = 0
                    while r0 < s.length {
                        let r1 = min(s.length, r0 + attentionBlock)
                        body(b, h, r0, r1)
                        r0 = r1
                    }
                }
            }
        }
    }

    // MARK: - SwiGLU

    /// out = silu(gate) * up. gateUp: (N, 2F) with gate in columns [0, F) and up in [F, 2F); out: (N, F).
    package static func swigluForward(gateUp: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                     rows n: Int, width f: Int) {
        Threads.parallelFor(n) { rows in
            for r in rows { rqat_silu_mul(gateUp + r * 2 * f, gateUp + r * 2 * f + f, out + r * f, f) }
        }
    }

    /// Backward of `swigluForward`: dout (N, F) → dGateUp (N, 2F) (written).
    package static func swigluBackward(gateUp: UnsafePointer<Float>, dout: UnsafePointer<Float>,
                                      dGateUp: UnsafeMutablePointer<Float>, rows n: Int, width f: Int) {
        Threads.parallelFor(n) { rows in
            for r in rows {
                let g = gateUp + r * 2 * f, dg = dGateUp + r * 2 * f
                rqat_silu_mul_backward(g, g + f, dout + r * f, dg, dg + f, f)
            }
        }
    }

    // MARK: - Embedding

    /// x[r] = E[tokens[r]]. E: (V, C); x: (N, C).
    package static func embeddingForward(tokens: UnsafePointer<Int>, table: UnsafePointer<Float>,
                                        x: UnsafeMutablePointer<Float>, rows n: Int, dim c: Int) {
        Threads.parallelFor(n) { rows in
            for r in rows { (x + r * c).update(from: table + tokens[r] * c, count: c) }
        }
    }

    /// dE[tokens[r]] += dx[r]. Threads own disjoint column slices, so repeated tokens never race.
    package static func embeddingBackward(tokens: UnsafePointer<Int>, dx: UnsafePointer<Float>,
                                         dTable: UnsafeMutablePointer<Float>, rows n: Int, dim c: Int) {
        Threads.parallelFor(c) { cols in
            let lo = cols.lowerBound, width = cols.count
            for r in 0..<n { rqat_axpy(1, dx + r * c + lo, dTable + tokens[r] * c + lo, width) }
        }
    }
}
