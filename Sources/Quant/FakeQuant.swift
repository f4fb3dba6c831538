import Formats
import Foundation
import Model
import Tensors

/// Fake quantization of the decoder's linear weights for quantization-aware training.
///
/// Each weight W (rows = output features, cols = input features) is split along the input
/// dimension into groups of `scheme.groupSize` columns (the last group is shorter when the size
/// does not divide the width; no group size = one group per row). Group (g, r) — group g of
/// row r — has a step size s and zero point z, stored at index g * rows + r of tensors shaped
/// (groups, rows), the GPTQ layout. With Qp = 2^bits - 1 the forward is
///
///     q   = clamp(round(w / s) + z, 0, Qp)        (round half to even, as torch.round)
///     w_q = s * (q - z)
///
/// which is `QuantGrid.fakeQuantize` for the same s and z.
///
/// Modes:
/// - `.ste`: s and z come from the current weights' min/max per group (the `QuantGrid`
///   convention: range includes 0; symmetric grids z = (Qp+1)/2), recomputed at every
///   `refresh()`. Backward is the straight-through estimator: dL/dw = dL/dw_q where the code
///   was not clamped (0 <= round(w/s) + z <= Qp), 0 where it was. Nothing is learned.
/// - `.lsq`: s (and z, for asymmetric schemes) are learnable `Parameter`s named
///   `<weight name>_scale` and `<weight name>_zero`, shape (groups, rows), initialised from
///   the min/max grid or from given scales and zeros (e.g. a GPTQ or RTN result).
///
/// LSQ gradients. Write u = w/s, r = round(u), and treat round as the identity in the chain
/// rule (straight-through: dr/du = 1). Two cases per weight:
///
///   in range (0 <= r + z <= Qp):  w_q = s * (r + z - z) = s * r
///       dw_q/dw = s * (1/s)                    = 1
///       dw_q/ds = r + s * d(r)/ds = r + s * (-w/s^2) = r - w/s     (= q - z - w/s)
///       dw_q/dz = s * (1 - 1)                  = 0   (z cancels: it only moves the clamp)
///   clamped (q = 0 or Qp):        w_q = s * (q - z), q constant
///       dw_q/dw = 0
///       dw_q/ds = q - z
///       dw_q/dz = -s
///
/// so with G = dL/dw_q:  dL/dw = G * [in range];  dL/ds = sum over the group of
/// G * (in range ? r - w/s : q - z);  dL/dz = -s * sum over the group's CLAMPED entries of G.
/// (The zero point gets no gradient from in-range weights — with this forward the in-range grid
/// s * r does not depend on z; the same holds for LSQ+'s offset.) With `gradientScale` on (the
/// default), dL/ds and dL/dz are multiplied by LSQ's 1 / sqrt(N * Qp), N = weights in the group
/// (N of the shorter last group for it).
///
/// The zero point is continuous during training; with round(w/s) + z the in-range codes are
/// then not integers, but w_q (= s * r) is unaffected; an export rounds z to the nearest integer
/// (which only moves the clamp limits by under half a step). Step sizes are kept >= `minimumScale`
/// (clamped at `refresh()`). For symmetric schemes z stays (Qp+1)/2 and is not learned.
///
/// Weight decay: the scale / zero tensors have rank 2, so `WeightDecayRule.standard` would decay
/// them; exclude them with `FakeQuantizer.decayExclusions` (`*_scale`, `*_zero`).
package final class FakeQuantizer: TrainingWeightQuantizer {
    package enum Mode: String, Codable, Sendable { case ste, lsq }

    package let scheme: QuantScheme
    package let mode: Mode
    package let bits: Int
    /// Qp = 2^bits - 1.
    package let maxCode: Int
    /// Multiply dL/ds and dL/dz by 1 / sqrt(N * Qp) (LSQ's gradient scale).
    package var gradientScale: Bool
    package private(set) var generation = 0
    /// `.lsq`: every `_scale` and (asymmetric) `_zero` parameter; `.ste`: empty.
    package let parameters: [Parameter]

    package static let minimumScale: Float = 1e-8
    /// Patterns for `WeightDecayRule.exclude` so the step sizes and zero points are not decayed.
    package static let decayExclusions = ["*_scale", "*_zero"]

    /// One quantized weight: its grid tensors (groups, rows).
    final class Entry {
        let weight: Parameter
        let rows, cols, groupSize, groups: Int
        let scale: Parameter
        let zero: Parameter
        let learnsZero: Bool

        init(weight: Parameter, groupSize: Int?, learnsZero: Bool) {
            self.weight = weight
            rows = weight.value.shape[0]
            cols = weight.value.shape[1]
            self.groupSize = min(groupSize ?? cols, cols)
            groups = (cols + self.groupSize - 1) / self.groupSize
            scale = Parameter(name: weight.name + "_scale", value: Tensor(shape: [groups, rows]))
            zero = Parameter(name: weight.name + "_zero", value: Tensor(shape: [groups, rows]))
            self.learnsZero = learnsZero
        }

        @inline(__always) func columns(_ g: Int) -> Range<Int> { (g * groupSize)..<min(cols, (g + 1) * groupSize) }
    }

    private let entries: [Entry]
    private let byWeight: [ObjectIdentifier: Entry]
    private let byName: [String: Entry]

    /// - Parameters:
    ///   - weights: the matrices to quantize (rank 2, (out, in)); usually `decoder.linearWeights`.
    ///   - initialGrids: `.lsq` only: starting scales and zeros by weight name, each
    ///     (groups, rows) row-major (index g * rows + r); others start from the min/max grid.
    package init(scheme: QuantScheme, mode: Mode, weights: [Parameter],
                initialGrids: [String: (scales: [Float], zeros: [Float])] = [:],
                gradientScale: Bool = true) throws {
        guard let bits = scheme.weightBits else { throw FakeQuantError("scheme \(scheme) has no weight bits") }
        try scheme.requireImplemented(for: "QAT")
        self.scheme = scheme
        self.mode = mode
        self.bits = bits
        maxCode = (1 << bits) - 1
        self.gradientScale = gradientScale
        if let g = scheme.groupSize, g <= 0 { throw FakeQuantError("group size \(g) must be positive") }
        if mode == .ste && !initialGrids.isEmpty { throw FakeQuantError("initial grids apply to .lsq only (.ste derives them from the weights)") }
        var entries: [Entry] = []
        for w in weights {
            guard w.value.rank == 2, w.value.count > 0 else {
                throw FakeQuantError("\(w.name) has shape \(w.value.shape); fake quantization needs a matrix")
            }
            entries.append(Entry(weight: w, groupSize: scheme.groupSize, learnsZero: mode == .lsq && !scheme.symmetric))
        }
        self.entries = entries
        byWeight = Dictionary(entries.map { (ObjectIdentifier($0.weight), $0) }, uniquingKeysWith: { a, _ in a })
        byName = Dictionary(entries.map { ($0.weight.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard byName.count == entries.count else { throw FakeQuantError("a weight is listed twice") }
        for name in initialGrids.keys where byName[name] == nil {
            throw FakeQuantError("initial grid for \(name), which is not among the quantized weights")
        }
        parameters = mode == .lsq ? entries.flatMap { $0.learnsZero ? [$0.scale, $0.zero] : [$0.scale] } : []

        for e in entries {
            if let given = initialGrids[e.weight.name] {
                let n = e.groups * e.rows
                guard given.scales.count == n, given.zeros.count == n else {
                    throw FakeQuantError("initial grid for \(e.weight.name): \(given.scales.count) scales and \(given.zeros.count) zeros, expected (groups \(e.groups), rows \(e.rows)) = \(n) each")
                }
                guard given.scales.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                    throw FakeQuantError("initial grid for \(e.weight.name) has a non-positive or non-finite scale")
                }
                given.scales.withUnsafeBufferPointer { e.scale.value.ptr.update(from: $0.baseAddress!, count: n) }
                given.zeros.withUnsafeBufferPointer { e.zero.value.ptr.update(from: $0.baseAddress!, count: n) }
                if scheme.symmetric { e.zero.value.fill(Float(maxCode + 1) / 2) }
            } else {
                minMaxGrid(e)
            }
        }
    }

    /// Quantizes every decoder-block linear weight of `decoder` (q, k, v, o, gate, up, down).
    /// Does not install itself: set `decoder.weightQuantizer`.
    package convenience init(decoder: TrainableDecoder, scheme: QuantScheme, mode: Mode,
                            initialGrids: [String: (scales: [Float], zeros: [Float])] = [:],
                            gradientScale: Bool = true) throws {
        try self.init(scheme: scheme, mode: mode, weights: decoder.linearWeights, initialGrids: initialGrids,
                      gradientScale: gradientScale)
    }

    /// Names of the quantized weights, in the order given.
    package var weightNames: [String] { entries.map(\.weight.name) }

    /// The latent (full-precision) weight `name`.
    package func weight(named name: String) -> Parameter {
        guard let e = byName[name] else { preconditionFailure("\(name) is not quantized by this FakeQuantizer") }
        return e.weight
    }

    /// The current scales and zeros of weight `name`, each (groups, rows) row-major.
    package func grid(of name: String) -> (scales: [Float], zeros: [Float]) {
        guard let e = byName[name] else { preconditionFailure("\(name) is not quantized by this FakeQuantizer") }
        return (e.scale.value.array, e.zero.value.array)
    }

    // MARK: - TrainingWeightQuantizer

    package func refresh() {
        for e in entries {
            switch mode {
            case .ste:
                minMaxGrid(e)
            case .lsq:
                let s = e.scale.value.ptr
                for i in 0..<e.scale.value.count where !(s[i] >= Self.minimumScale) { s[i] = Self.minimumScale }
            }
        }
        generation &+= 1
    }

    package func forwardWeight(of p: Parameter, into out: UnsafeMutablePointer<Float>) {
        let e = entry(p)
        let w = p.value.ptr, s = e.scale.value.ptr, z = e.zero.value.ptr
        let rows = e.rows, cols = e.cols, qp = Float(maxCode)
        Threads.parallelFor(rows) { rs in
            for r in rs {
                for g in 0..<e.groups {
                    let range = e.columns(g)
                    Self.fakeQuantize(w + r * cols + range.lowerBound, out + r * cols + range.lowerBound,
                                      count: range.count, scale: s[g * rows + r], zero: z[g * rows + r], maxCode: qp)
                }
            }
        }
    }

    package func backward(of p: Parameter, dQuantized: UnsafePointer<Float>) {
        let e = entry(p)
        let w = p.value.ptr, gw = p.grad.ptr, s = e.scale.value.ptr, z = e.zero.value.ptr
        let gs = e.scale.grad.ptr, gz = e.zero.grad.ptr
        let rows = e.rows, cols = e.cols, qp = Float(maxCode)
        let lsq = mode == .lsq, learnsZero = e.learnsZero, scaled = gradientScale
        Threads.parallelFor(rows) { rs in
            // Per-element terms of the group sums (see lsqBackward).
            let terms = UnsafeMutablePointer<Float>.allocate(capacity: lsq ? 2 * e.groupSize : 1)
            defer { terms.deallocate() }
            for r in rs {
                for g in 0..<e.groups {
                    let range = e.columns(g), o = r * cols + range.lowerBound, k = g * rows + r
                    if !lsq {
                        Self.steBackward(w + o, dQuantized + o, gw + o, count: range.count,
                                         scale: s[k], zero: z[k], maxCode: qp)
                        continue
                    }
                    let (ds, clampedSum) = Self.lsqBackward(w + o, dQuantized + o, gw + o, terms: terms,
                                                            count: range.count, scale: s[k], zero: z[k], maxCode: qp)
                    let factor: Float = scaled ? 1 / (Float(range.count) * qp).squareRoot() : 1
                    gs[k] += factor * ds
                    if learnsZero { gz[k] += factor * (-s[k] * clampedSum) }
                }
            }
        }
    }

    // MARK: - Kernels

    private func entry(_ p: Parameter) -> Entry {
        guard let e = byWeight[ObjectIdentifier(p)] else {
            preconditionFailure("\(p.name) is not quantized by this FakeQuantizer")
        }
        return e
    }

    /// Scales and zeros from each group's min/max (`QuantGrid`'s convention).
    private func minMaxGrid(_ e: Entry) {
        let w = e.weight.value.ptr, s = e.scale.value.ptr, z = e.zero.value.ptr
        let rows = e.rows, cols = e.cols, bits = bits, symmetric = scheme.symmetric
        Threads.parallelFor(rows) { rs in
            for r in rs {
                for g in 0..<e.groups {
                    let range = e.columns(g)
                    let (lo, hi) = Self.minMax(w + r * cols + range.lowerBound, count: range.count)
                    let grid = QuantGrid(min: lo, max: hi, bits: bits, symmetric: symmetric)
                    s[g * rows + r] = grid.scale
                    z[g * rows + r] = grid.zero
                }
            }
        }
    }

    /// round-half-to-even for |x| < 2^22 without a libm call (baseline x86-64 has no vector
    /// round instruction, and `rounded(.toNearestOrEven)` becomes a call per element). Larger
    /// magnitudes stay large, so they are clamped all the same.
    @inline(__always)
    static func roundEven(_ x: Float) -> Float {
        let magic: Float = 12_582_912  // 1.5 * 2^23
        return (x + magic) - magic
    }

    @inline(__always)
    static func fakeQuantize(_ w: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int,
                             scale s: Float, zero z: Float, maxCode qp: Float) {
        for j in 0..<count {
            let q = min(max(roundEven(w[j] / s) + z, 0), qp)
            out[j] = s * (q - z)
        }
    }

    // The loops below are written so the compiler vectorises them: unconditional loads, the
    // in-range test as clamp(u) == u, and no floating-point sum carried across iterations
    // (it would not be reordered, so the whole loop would stay scalar).

    /// gw += G where the code was not clamped.
    @inline(__always)
    static func steBackward(_ w: UnsafePointer<Float>, _ d: UnsafePointer<Float>, _ gw: UnsafeMutablePointer<Float>,
                            count: Int, scale s: Float, zero z: Float, maxCode qp: Float) {
        for j in 0..<count {
            let u = roundEven(w[j] / s) + z
            let q = min(max(u, 0), qp)
            let g = d[j]
            gw[j] += q == u ? g : 0
        }
    }

    /// gw += G where in range; returns (sum of G * dw_q/ds, sum of G over clamped entries).
    /// `terms`: scratch for 2 * count floats (the per-element terms, summed in a second pass).
    @inline(__always)
    static func lsqBackward(_ w: UnsafePointer<Float>, _ d: UnsafePointer<Float>, _ gw: UnsafeMutablePointer<Float>,
                            terms: UnsafeMutablePointer<Float>, count: Int,
                            scale s: Float, zero z: Float, maxCode qp: Float) -> (Float, Float) {
        let dsTerms = terms, clampedTerms = terms + count
        for j in 0..<count {
            let x = w[j] / s
            let u = roundEven(x) + z
            let q = min(max(u, 0), qp)
            let g = d[j]
            let gIn: Float = q == u ? g : 0
            gw[j] += gIn
            // in range: G * (r - x) = G * (q - z) - G * x; clamped: G * (q - z).
            dsTerms[j] = g * (q - z) - gIn * x
            clampedTerms[j] = g - gIn
        }
        return (sum(dsTerms, count), sum(clampedTerms, count))
    }

    /// Four accumulators, so the sum is not one long dependency chain.
    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
        var j = 0
        while j + 4 <= n {
            a0 += x[j]; a1 += x[j + 1]; a2 += x[j + 2]; a3 += x[j + 3]
            j += 4
        }
        while j < n { a0 += x[j]; j += 1 }
        return (a0 + a1) + (a2 + a3)
    }

    @inline(__always)
    static func minMax(_ x: UnsafePointer<Float>, count n: Int) -> (Float, Float) {
        var l0 = Float.infinity, l1 = Float.infinity, l2 = Float.infinity, l3 = Float.infinity
        var h0 = -Float.infinity, h1 = -Float.infinity, h2 = -Float.infinity, h3 = -Float.infinity
        var i = 0
        while i + 4 <= n {
            l0 = min(l0, x[i]); l1 = min(l1, x[i + 1]); l2 = min(l2, x[i + 2]); l3 = min(l3, x[i + 3])
            h0 = max(h0, x[i]); h1 = max(h1, x[i + 1]); h2 = max(h2, x[i + 2]); h3 = max(h3, x[i + 3])
            i += 4
        }
        while i < n { l0 = min(l0, x[i]); h0 = max(h0, x[i]); i += 1 }
        return (min(min(l0, l1), min(l2, l3)), max(max(h0, h1), max(h2, h3)))
    }
}

package struct FakeQuantError: UserFacingError, Equatable {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}
