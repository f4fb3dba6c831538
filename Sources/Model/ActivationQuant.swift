import Formats
import Tensors

/// Fake quantization of activations (per token) and of the KV cache (per token and head), for
/// W4A4KV4-style schemes: the settings and the one kernel that both transform seams run.
///
/// Each row of x (a token) is split into groups of `groupSize` columns (0 = the whole row, i.e.
/// per token; the last group is shorter when the size does not divide the width). Per group, with
/// clip ratio c in (0, 1] and b bits:
///
///     asymmetric:  max' = c max(x), min' = c min(x), Qp = 2^b - 1
///                  s = (max' - min') / Qp,  z = round(-min' / s)
///                  q = clamp(round(x / s) + z, 0, Qp),             x̂ = (q - z) s
///     symmetric:   m = c max|x|, Qp = 2^(b-1) - 1
///                  s = m / Qp
///                  q = clamp(round(x / s), -(Qp + 1), Qp),         x̂ = q s
///
/// `round` is round half to even, as `torch.round` (the PyTorch reference of the tests,
/// scripts/reference/act_quant.py). The asymmetric range is the clipped min and max themselves,
/// not widened to include 0 (QuaRot's group-wise activation quantizer, the one its KV cache uses,
/// does the same; its per-token one widens the range to include 0). A group whose step comes out
/// 0 (constant asymmetric, all-zero symmetric) is passed through unchanged, forward and backward.
///
/// Backward is the straight-through estimator with the clip mask: dx = dy where x lies inside
/// the clipped range (min' <= x <= max'; symmetric |x| <= m), 0 outside. The step sizes and zero
/// points are treated as constants (no gradient flows through the group's min and max), as in
/// QuaRot/SpinQuant-style STE training; with c = 1 every entry is inside, so dx = dy. A learnable
/// clip ratio (FlatQuant's) is not part of this quantizer: it has no parameters.
///
/// The kernel keeps no state and shares no scratch, so one value can serve every site and thread.
/// `forward` may run in place (y == x). Rows are split over `Threads.parallelFor` when there are
/// several and enough work; pass `parallel: false` from code already inside a `parallelFor`
/// (the pool is not re-entrant: a nested run with more than one task would deadlock).
///
/// The seams: `TrainableActivationQuantizer` (a `TrainableInputTransform`, for the training
/// decoder's `inputTransforms` and `cacheTransforms`) and `InPlaceActivationQuantizer` (a
/// `LinearInputTransform`, for the inference decoder's linear layers and `cacheTransforms`).
/// KV-cache quantization is the same kernel with `groupSize` = head dim over the cache row
/// (keys after RoPE, then values: 2 KV heads x D), so each head of each token, keys and values
/// separately, has its own scale: `ActivationQuantizer.kvCache(bits:headDim:)`.
package struct ActivationQuantizer: Hashable, Sendable, CustomStringConvertible {
    package let bits: Int
    package let symmetric: Bool
    /// c in (0, 1]: the range is c times the group's min and max (symmetric: max |x|).
    package let clipRatio: Float
    /// Columns per group; 0 = the whole row (per token).
    package let groupSize: Int

    package static let supportedBits = 2...8

    package init(bits: Int, symmetric: Bool = false, clipRatio: Float = 1, groupSize: Int = 0) {
        precondition(Self.supportedBits.contains(bits), "activation quantizer: bits \(bits) not in 2...8")
        precondition(clipRatio > 0 && clipRatio <= 1, "activation quantizer: clip ratio \(clipRatio) not in (0, 1]")
        precondition(groupSize >= 0, "activation quantizer: negative group size \(groupSize)")
        self.bits = bits
        self.symmetric = symmetric
        self.clipRatio = clipRatio
        self.groupSize = groupSize
    }

    /// The KV-cache quantizer: groups of one head's `headDim` entries over a cache row of keys
    /// then values.
    package static func kvCache(bits: Int, headDim: Int, symmetric: Bool = false, clipRatio: Float = 1) -> ActivationQuantizer {
        precondition(headDim > 0, "KV-cache quantizer: head dim \(headDim)")
        return ActivationQuantizer(bits: bits, symmetric: symmetric, clipRatio: clipRatio, groupSize: headDim)
    }

    /// e.g. `a4-asym`, `a8-sym-clip0.9`, `a4-asym-g64`.
    package var description: String {
        "a\(bits)-\(symmetric ? "sym" : "asym")" + (clipRatio < 1 ? "-clip\(clipRatio)" : "") + (groupSize > 0 ? "-g\(groupSize)" : "")
    }

    // MARK: - Kernel

    /// y = x̂, x and y (rows, width) row-major; y may be x.
    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int,
                         parallel: Bool = true) {
        forEachGroup(rows: rows, width: width, parallel: parallel) { start, count in
            let xg = x + start, yg = y + start
            guard let g = grid(xg, count) else {
                if UnsafePointer(yg) != xg { yg.update(from: xg, count: count) }
                return
            }
            let s = g.scale, z = g.zero, lo = g.lowCode, hi = g.highCode
            if g.fastRound {
                for j in 0..<count {
                    let q = min(max(FloatRounding.roundEven(xg[j] / s) + z, lo), hi)
                    yg[j] = (q - z) * s
                }
            } else {
                for j in 0..<count {
                    let q = min(max((xg[j] / s).rounded(.toNearestOrEven) + z, lo), hi)
                    yg[j] = (q - z) * s
                }
            }
        }
    }

    /// dx = dy inside the clipped range of x's group, 0 outside (straight-through; the grid is a
    /// constant). x is the input forward saw; dx may be dy.
    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                          rows: Int, width: Int, parallel: Bool = true) {
        forEachGroup(rows: rows, width: width, parallel: parallel) { start, count in
            let xg = x + start, dyg = dy + start, dxg = dx + start
            guard let g = grid(xg, count) else {
                if UnsafePointer(dxg) != dyg { dxg.update(from: dyg, count: count) }
                return
            }
            let a = g.clipLow, b = g.clipHigh
            for j in 0..<count {
                let v = xg[j], d = dyg[j]
                dxg[j] = v >= a && v <= b ? d : 0
            }
        }
    }

    /// One group's grid: step, zero point, code range, and the clipped range the STE passes.
    struct Grid {
        var scale, zero, lowCode, highCode, clipLow, clipHigh: Float
        /// |x / s| < 2^22 for every x of the group, so `FloatRounding.roundEven` is exact.
        var fastRound: Bool
    }

    /// The grid of the `count` values at x; nil when its step is 0 (or not a number): identity.
    @inline(__always)
    func grid(_ x: UnsafePointer<Float>, _ count: Int) -> Grid? {
        let (lo, hi) = FloatRounding.minMax(x, count: count)
        let c = clipRatio
        let g: Grid
        if symmetric {
            let qp = Float((1 << (bits - 1)) - 1)
            let m = max(-lo, hi) * c
            let s = m / qp
            guard s > 0 && s.isFinite else { return nil }
            g = Grid(scale: s, zero: 0, lowCode: -qp - 1, highCode: qp, clipLow: -m, clipHigh: m, fastRound: false)
        } else {
            let qp = Float((1 << bits) - 1)
            let low = lo * c, high = hi * c
            let s = (high - low) / qp
            guard s > 0 && s.isFinite else { return nil }
            g = Grid(scale: s, zero: (-low / s).rounded(.toNearestOrEven), lowCode: 0, highCode: qp,
                     clipLow: low, clipHigh: high, fastRound: false)
        }
        var out = g
        out.fastRound = max(-lo, hi) / g.scale < 4_194_304
        return out
    }

    /// Rows at or above this many elements in all go over `Threads.parallelFor`.
    static let parallelElements = 32_768

    /// body(first element, count) for every group of every row, rows split over threads when
    /// `parallel` and the work is large enough.
    @inline(__always)
    func forEachGroup(rows: Int, width: Int, parallel: Bool, _ body: (Int, Int) -> Void) {
        guard rows > 0 && width > 0 else { return }
        let size = groupSize == 0 ? width : min(groupSize, width)
        func run(_ range: Range<Int>) {
            for r in range {
                var start = 0
                while start < width {
                    let count = min(size, width - start)
                    body(r * width + start, count)
                    start += count
                }
            }
        }
        if parallel && rows > 1 && rows * width >= Self.parallelElements {
            Threads.parallelFor(rows) { run($0) }
        } else {
            run(0..<rows)
        }
    }
}

/// The activation (or KV-cache) fake-quantizer as a training input transform: no parameters,
/// y = x̂, and the straight-through backward of `ActivationQuantizer`.
package final class TrainableActivationQuantizer: TrainableInputTransform {
    package let quantizer: ActivationQuantizer
    package let parameters: [Parameter] = []

    package init(_ quantizer: ActivationQuantizer) { self.quantizer = quantizer }

    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        quantizer.forward(x, into: y, rows: rows, width: width)
    }

    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        quantizer.backward(x: x, dy: dy, dx: dx, rows: rows, width: width)
    }
}

/// The activation (or KV-cache) fake-quantizer as the inference decoder's input transform, in
/// place. Thread-safe: no state beyond the settings and no shared scratch. For the cache site,
/// which the decoder calls from inside its own `Threads.parallelFor`, make it with
/// `parallel: false` (the rows then stay on the calling thread).
package final class InPlaceActivationQuantizer: LinearInputTransform {
    package let quantizer: ActivationQuantizer
    /// Whether a call may split its rows over `Threads.parallelFor`.
    package let parallel: Bool

    package init(_ quantizer: ActivationQuantizer, parallel: Bool = true) {
        self.quantizer = quantizer
        self.parallel = parallel
    }

    package func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        quantizer.forward(x, into: x, rows: rows, width: width, parallel: parallel)
    }
}

// MARK: - A scheme's activation and KV-cache quantization on a model

extension ActivationQuantSpec {
    /// The quantizer of every decoder-block linear layer's input (per token); nil without `a<bits>`.
    package var activationQuantizer: ActivationQuantizer? {
        activationBits.map { ActivationQuantizer(bits: $0, symmetric: activationSymmetric, clipRatio: activationClip) }
    }

    /// The KV cache's quantizer (per token and head); nil without `kv<bits>`.
    package func kvQuantizer(headDim: Int) -> ActivationQuantizer? {
        kvBits.map { ActivationQuantizer.kvCache(bits: $0, headDim: headDim, clipRatio: kvClip) }
    }
}

extension DecoderWeights {
    /// Fake-quantizes, at run time, every decoder-block linear layer's input and what each block
    /// caches (keys after RoPE, values). The embedding, the LM head and the norms stay in full
    /// precision.
    package func installActivationQuant(_ spec: ActivationQuantSpec) {
        for layer in layers {
            if let a = spec.activationQuantizer {
                for site in LinearSite.allCases { layer.linear(site).inputTransforms.append(InPlaceActivationQuantizer(a)) }
            }
            // The decoder calls cache transforms from inside its own parallel loop.
            if let kv = spec.kvQuantizer(headDim: config.headDim) { layer.cacheTransforms.append(InPlaceActivationQuantizer(kv, parallel: false)) }
        }
    }
}

extension TrainableDecoder {
    /// The same quantization as `DecoderWeights.installActivationQuant` in training, with the
    /// straight-through backward (its inference view, `inferenceWeights()`, runs the same).
    /// The quantizers go after any transform a site already has (an online rotation).
    package func installActivationQuant(_ spec: ActivationQuantSpec) {
        for l in 0..<config.numHiddenLayers {
            if let a = spec.activationQuantizer {
                for site in LinearSite.allCases {
                    let key = LinearSiteKey(layer: l, site: site)
                    inputTransforms[key] = ChainedTransform.combining(inputTransforms[key], TrainableActivationQuantizer(a))
                }
            }
            if let kv = spec.kvQuantizer(headDim: config.headDim) {
                cacheTransforms[l] = ChainedTransform.combining(cacheTransforms[l], TrainableActivationQuantizer(kv))
            }
        }
    }
}
