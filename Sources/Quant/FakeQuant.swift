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
/// - `.ste`: without a given grid, s and z come from the current weights' min/max per group
///   (the `QuantGrid` convention: range includes 0; symmetric grids z = (Qp+1)/2), recomputed
///   at every `refresh()`. With a given grid (a PTQ init's: `InitialGrid`), s and z stay that
///   grid for the whole run, so QAT starts from the PTQ model itself: on the init's dequantized
///   weights the step-0 forward reproduces them bit for bit (a min/max re-grid would round a
///   GPTQ init's weights again, since GPTQ's clipped ranges and act-order groups are not min/max
///   grids of contiguous columns). Backward is the straight-through estimator: dL/dw = dL/dw_q
///   where the code was not clamped (0 <= round(w/s) + z <= Qp), 0 where it was. Nothing is
///   learned.
/// - `.lsq`: s (and z, for asymmetric schemes) are learnable `Parameter`s named
///   `<weight name>_scale` and `<weight name>_zero`, shape (groups, rows), initialised from
///   the min/max grid or from a given grid (e.g. a GPTQ or RTN result).
///
/// Groups. Without a given group index, group g is columns g*G ..< (g+1)*G. A given grid may
/// carry GPTQ's `g_idx` (act-order: the group of each input column), and then the groups follow
/// it. State that is given rather than learned (a fixed STE grid; a group index) is in
/// `parameters` as frozen tensors (`<weight name>_scale`, `_zero`, `_g_idx`), so checkpoints
/// hold it and a resumed run or a saved step's model uses the same grid.
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
    /// `.lsq`: every `_scale` and (asymmetric) `_zero` parameter; `.ste`: the frozen `_scale`
    /// and `_zero` of the weights whose grid was given. Both: the frozen `_g_idx` of weights
    /// whose groups are permuted.
    package let parameters: [Parameter]

    package static let minimumScale: Float = 1e-8
    /// Patterns for `WeightDecayRule.exclude` so the step sizes and zero points are not decayed.
    package static let decayExclusions = ["*_scale", "*_zero"]

    /// A grid to start from (or, in `.ste`, to keep): scales and zeros (groups, rows) row-major
    /// (index g * rows + r), and optionally the group of each input column (GPTQ's `g_idx`;
    /// nil = contiguous groups).
    package struct InitialGrid: Sendable {
        package var scales: [Float]
        package var zeros: [Float]
        package var groupIndex: [Int32]?

        package init(scales: [Float], zeros: [Float], groupIndex: [Int32]? = nil) {
            self.scales = scales
            self.zeros = zeros
            self.groupIndex = groupIndex
        }

        /// The grid of a quantized matrix (a PTQ result), with its group index when permuted.
        package init(_ m: QuantizedMatrix) {
            self.init(scales: m.scales, zeros: m.zeros, groupIndex: m.hasPermutedGroups ? m.gIdx : nil)
        }
    }

    /// Suffix of the frozen tensor that holds a weight's group index.
    package static let groupIndexSuffix = "_g_idx"

    /// One quantized weight: its grid tensors (groups, rows).
    final class Entry {
        let weight: Parameter
        let rows, cols, groupSize, groups: Int
        let scale: Parameter
        let zero: Parameter
        let learnsZero: Bool
        /// The grid was given and `.ste` keeps it (no min/max re-grid at `refresh()`).
        let fixedGrid: Bool
        /// The group of each input column when the groups are not contiguous, as a frozen
        /// tensor (cols) for checkpoints, and as integers for the kernels.
        let groupIndex: Parameter?
        let columnGroup: [Int32]?
        /// Columns in each group.
        let groupCounts: [Int]
        /// Permuted groups: the columns sorted by group (stable), and where each group starts in
        /// that order (groups + 1 entries). The kernels run on a row gathered into this order, so
        /// every group is a contiguous run, as it is without a permutation (order nil, start g*G).
        let order: [Int]?
        let groupStarts: [Int]

        init(weight: Parameter, groupSize: Int?, learnsZero: Bool, fixedGrid: Bool, columnGroup: [Int32]?) {
            self.weight = weight
            rows = weight.value.shape[0]
            cols = weight.value.shape[1]
            self.groupSize = min(groupSize ?? cols, cols)
            groups = (cols + self.groupSize - 1) / self.groupSize
            scale = Parameter(name: weight.name + "_scale", value: Tensor(shape: [groups, rows]))
            zero = Parameter(name: weight.name + "_zero", value: Tensor(shape: [groups, rows]))
            self.learnsZero = learnsZero
            self.fixedGrid = fixedGrid
            scale.frozen = fixedGrid
            zero.frozen = fixedGrid
            self.columnGroup = columnGroup
            var counts = [Int](repeating: 0, count: groups)
            if let columnGroup {
                let index = Parameter(name: weight.name + FakeQuantizer.groupIndexSuffix, value: Tensor(shape: [cols]))
                for (c, g) in columnGroup.enumerated() {
                    index.value.ptr[c] = Float(g)
                    counts[Int(g)] += 1
                }
                index.frozen = true
                groupIndex = index
            } else {
                for g in 0..<groups { counts[g] = min(cols, (g + 1) * self.groupSize) - g * self.groupSize }
                groupIndex = nil
            }
            groupCounts = counts
            var starts = [0]
            for c in counts { starts.append(starts.last! + c) }
            groupStarts = starts
            order = columnGroup.map { index in (0..<index.count).sorted { (index[$0], $0) < (index[$1], $1) } }
        }

        /// Copies row `src` into `dst` in group order.
        @inline(__always) func gather(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
            guard let order else { return }
            for (j, c) in order.enumerated() { dst[j] = src[c] }
        }

        /// Copies a row in group order back to column order.
        @inline(__always) func scatter(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
            guard let order else { return }
            for (j, c) in order.enumerated() { dst[c] = src[j] }
        }

        /// The tensors a checkpoint must hold to rebuild this weight's quantizer.
        func state(mode: Mode) -> [Parameter] {
            var out: [Parameter] = []
            if mode == .lsq {
                out = learnsZero ? [scale, zero] : [scale]
            } else if fixedGrid {
                out = [scale, zero]
            }
            if let groupIndex { out.append(groupIndex) }
            return out
        }
    }

    private let entries: [Entry]
    private let byWeight: [ObjectIdentifier: Entry]
    private let byName: [String: Entry]

    /// - Parameters:
    ///   - weights: the matrices to quantize (rank 2, (out, in)); usually `decoder.linearWeights`.
    ///   - initialGrids: starting grids by weight name (`.ste` keeps them fixed; `.lsq` learns
    ///     from them); the other weights start from the min/max grid.
    package init(scheme: QuantScheme, mode: Mode, weights: [Parameter],
                initialGrids: [String: InitialGrid] = [:],
                gradientScale: Bool = true) throws {
        guard let bits = scheme.weightBits else { throw FakeQuantError("scheme \(scheme) has no weight bits") }
        self.scheme = scheme
        self.mode = mode
        self.bits = bits
        maxCode = (1 << bits) - 1
        self.gradientScale = gradientScale
        if let g = scheme.groupSize, g <= 0 { throw FakeQuantError("group size \(g) must be positive") }
        let names = Set(weights.map(\.name))
        for name in initialGrids.keys.sorted() where !names.contains(name) {
            throw FakeQuantError("initial grid for \(name), which is not among the quantized weights")
        }
        var entries: [Entry] = []
        for w in weights {
            guard w.value.rank == 2, w.value.count > 0 else {
                throw FakeQuantError("\(w.name) has shape \(w.value.shape); fake quantization needs a matrix")
            }
            let given = initialGrids[w.name]
            // Checked before the entry is built, since the entry indexes by the group index.
            if let given { try Self.check(given, for: w, groupSize: scheme.groupSize, maxCode: maxCode, symmetric: scheme.symmetric) }
            entries.append(Entry(weight: w, groupSize: scheme.groupSize, learnsZero: mode == .lsq && !scheme.symmetric,
                                 fixedGrid: given != nil && mode == .ste, columnGroup: given?.groupIndex))
        }
        self.entries = entries
        byWeight = Dictionary(entries.map { (ObjectIdentifier($0.weight), $0) }, uniquingKeysWith: { a, _ in a })
        byName = Dictionary(entries.map { ($0.weight.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard byName.count == entries.count else { throw FakeQuantError("a weight is listed twice") }
        parameters = entries.flatMap { $0.state(mode: mode) }

        for e in entries {
            if let given = initialGrids[e.weight.name] {
                let n = e.groups * e.rows
                given.scales.withUnsafeBufferPointer { e.scale.value.ptr.update(from: $0.baseAddress!, count: n) }
                given.zeros.withUnsafeBufferPointer { e.zero.value.ptr.update(from: $0.baseAddress!, count: n) }
            } else {
                minMaxGrid(e)
            }
        }
    }

    /// One-line errors for a grid that does not fit its weight or the scheme.
    private static func check(_ given: InitialGrid, for w: Parameter, groupSize: Int?, maxCode: Int, symmetric: Bool) throws {
        let name = w.name, rows = w.value.shape[0], cols = w.value.shape[1]
        let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: groupSize), n = groups * rows
        guard given.scales.count == n, given.zeros.count == n else {
            throw FakeQuantError("initial grid for \(name): \(given.scales.count) scales and \(given.zeros.count) zeros, expected (groups \(groups), rows \(rows)) = \(n) each")
        }
        guard given.scales.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw FakeQuantError("initial grid for \(name) has a non-positive or non-finite scale")
        }
        guard given.zeros.allSatisfy({ $0 >= 0 && $0 <= Float(maxCode) }) else {
            throw FakeQuantError("initial grid for \(name) has a zero point outside 0...\(maxCode)")
        }
        if symmetric, let z = given.zeros.first(where: { $0 != Float(maxCode + 1) / 2 }) {
            throw FakeQuantError("initial grid for \(name) has zero point \(z) but the scheme is symmetric (zero \((maxCode + 1) / 2)); use the init's own scheme")
        }
        if let index = given.groupIndex {
            guard index.count == cols, index.allSatisfy({ $0 >= 0 && Int($0) < groups }) else {
                throw FakeQuantError("initial grid for \(name): the group index must list a group in 0..<\(groups) for each of \(cols) columns")
            }
        }
    }

    /// Quantizes every decoder-block linear weight of `decoder` (q, k, v, o, gate, up, down).
    /// Does not install itself: set `decoder.weightQuantizer`.
    package convenience init(decoder: TrainableDecoder, scheme: QuantScheme, mode: Mode,
                            initialGrids: [String: InitialGrid] = [:],
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

    /// The current scales and zeros of weight `name`, each (groups, rows) row-major, and its
    /// group index when the groups are not contiguous.
    package func grid(of name: String) -> InitialGrid {
        guard let e = byName[name] else { preconditionFailure("\(name) is not quantized by this FakeQuantizer") }
        return InitialGrid(scales: e.scale.value.array, zeros: e.zero.value.array, groupIndex: e.columnGroup)
    }

    // MARK: - TrainingWeightQuantizer

    package func refresh() {
        for e in entries {
            switch mode {
            case .ste:
                if !e.fixedGrid { minMaxGrid(e) }
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
            // Permuted groups: the row in group order (w, then w_q).
            let gathered = e.order.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: 2 * cols) }
            defer { gathered?.deallocate() }
            for r in rs {
                var wr = w + r * cols, outr = out + r * cols
                if let gathered {
                    e.gather(wr, into: gathered)
                    (wr, outr) = (gathered, gathered + cols)
                }
                for g in 0..<e.groups {
                    let lo = e.groupStarts[g]
                    Self.fakeQuantize(wr + lo, outr + lo, count: e.groupCounts[g],
                                      scale: s[g * rows + r], zero: z[g * rows + r], maxCode: qp)
                }
                e.scatter(outr, into: out + r * cols)
            }
        }
    }

    package func backward(of p: Parameter, dQuantized: UnsafePointer<Float>) {
        let e = entry(p)
        let w = p.value.ptr, gw = p.grad.ptr, s = e.scale.value.ptr, z = e.zero.value.ptr
        let gs = e.scale.grad.ptr, gz = e.zero.grad.ptr
        let rows = e.rows, cols = e.cols, qp = Float(maxCode)
        let lsq = mode == .lsq, learnsZero = e.learnsZero, scaled = gradientScale
        let largestGroup = e.groupCounts.max() ?? 0
        Threads.parallelFor(rows) { rs in
            // Per-element terms of the group sums (see lsqBackward).
            let terms = UnsafeMutablePointer<Float>.allocate(capacity: lsq ? 2 * largestGroup : 1)
            defer { terms.deallocate() }
            // Permuted groups: the row in group order (w, dL/dw_q, dL/dw).
            let gathered = e.order.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: 3 * cols) }
            defer { gathered?.deallocate() }
            for r in rs {
                var wr = w + r * cols, dr = UnsafeMutablePointer(mutating: dQuantized + r * cols), gwr = gw + r * cols
                if let gathered {
                    e.gather(wr, into: gathered)
                    e.gather(dr, into: gathered + cols)
                    e.gather(gwr, into: gathered + 2 * cols)
                    (wr, dr, gwr) = (gathered, gathered + cols, gathered + 2 * cols)
                }
                for g in 0..<e.groups {
                    let o = e.groupStarts[g], n = e.groupCounts[g], k = g * rows + r
                    if !lsq {
                        Self.steBackward(wr + o, dr + o, gwr + o, count: n, scale: s[k], zero: z[k], maxCode: qp)
                        continue
                    }
                    let (ds, clampedSum) = Self.lsqBackward(wr + o, dr + o, gwr + o, terms: terms,
                                                            count: n, scale: s[k], zero: z[k], maxCode: qp)
                    let factor: Float = scaled ? 1 / (Float(n) * qp).squareRoot() : 1
                    gs[k] += factor * ds
                    if learnsZero { gz[k] += factor * (-s[k] * clampedSum) }
                }
                e.scatter(gwr, into: gw + r * cols)
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
            let gathered = e.order.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: cols) }
            defer { gathered?.deallocate() }
            for r in rs {
                var wr = w + r * cols
                if let gathered {
                    e.gather(wr, into: gathered)
                    wr = gathered
                }
                for g in 0..<e.groups {
                    let (lo, hi) = FloatRounding.minMax(wr + e.groupStarts[g], count: e.groupCounts[g])
                    let grid = QuantGrid(min: lo, max: hi, bits: bits, symmetric: symmetric)
                    s[g * rows + r] = grid.scale
                    z[g * rows + r] = grid.zero
                }
            }
        }
    }

    @inline(__always)
    static func fakeQuantize(_ w: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int,
                             scale s: Float, zero z: Float, maxCode qp: Float) {
        for j in 0..<count {
            let q = min(max(FloatRounding.roundEven(w[j] / s) + z, 0), qp)
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
            let u = FloatRounding.roundEven(w[j] / s) + z
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
            let u = FloatRounding.roundEven(x) + z
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

}

package struct FakeQuantError: UserFacingError, Equatable {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}
