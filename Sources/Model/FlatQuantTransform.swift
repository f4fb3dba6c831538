import Foundation
import CKernels
import Formats
import Tensors

/// A FlatQuant transform that cannot be built or used; one line naming it and the fix.
package struct FlatQuantError: UserFacingError, Equatable {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}

/// FlatQuant's learnable affine transform of one linear site's input (Sun et al., 2024):
///
///     x → x P,   P = diag(s) (L ⊗ R),   L: (a, a), R: (b, b), a b = n (the input width)
///
/// and, to keep the product, the weights read it as W P⁻ᵀ: (x P)(W P⁻ᵀ)ᵀ = x Wᵀ. With
/// P⁻¹ = (L⁻¹ ⊗ R⁻¹) diag(1/s), a weight row w becomes (w / s)(L⁻ᵀ ⊗ R⁻ᵀ) — the same Kronecker
/// product (`KroneckerFactors`) with the inverse transposed factors. The transform is the
/// identity at L = R = I, s = 1; calibration starts from random orthogonal L, R (`Start`).
///
/// As a training input transform it is x → x P with its backward (gradients into L, R, s);
/// `transformWeight` / `weightBackward` are the weight side, which FlatQuant's calibration
/// (Quant's `FlatQuantWeightQuantizer`) runs on the weights reading this site. Both sides use
/// the same parameters, so a step moves them together. `refreshInverse()` re-derives L⁻¹, R⁻¹
/// after the parameters change.
package final class FlatQuantTransform: TrainableInputTransform {
    package let factors: KroneckerFactors
    package let left: Parameter      // (a, a)
    package let right: Parameter     // (b, b)
    package let scale: Parameter     // (n)
    private(set) var leftInverseT: [Float] = []   // (L⁻¹)ᵀ
    private(set) var rightInverseT: [Float] = []  // (R⁻¹)ᵀ
    private var buffers: [Tensor] = []

    /// Where calibration starts L and R (s starts at 1). FlatQuant starts them random orthogonal:
    /// P is then a rotation, which spreads an outlier channel over all n before training (as
    /// QuaRot's Hadamard does); from the identity, training must learn that spread itself.
    package enum Start: String, Codable, CaseIterable, Sendable {
        case identity
        /// Haar-random orthogonal factors (FlatQuant's published start).
        case orthogonal
        /// Normalised Hadamard factors H_a/√a, H_b/√b, so P = H_n/√n; needs both orders to have a
        /// Hadamard matrix (`Hadamard.decomposition`).
        case hadamard
    }

    /// The transform of width n with balanced factors starting at `start` (random factors from
    /// `rng`), parameters named `prefix.left` etc. Throws when `.hadamard` has no matrix of a
    /// factor's order.
    package convenience init(width n: Int, name prefix: String, start: Start = .identity, rng: inout SeededRNG) throws {
        let f = KroneckerFactors.balanced(n)
        let s = Tensor(shape: [n])
        s.fill(1)
        func factor(_ k: Int) throws -> Tensor {
            switch start {
            case .identity:
                let t = Tensor(shape: [k, k])
                for i in 0..<k { t.ptr[i * k + i] = 1 }
                return t
            case .orthogonal:
                return Tensor(shape: [k, k], values: SmallMatrix.randomOrthogonal(size: k, rng: &rng))
            case .hadamard:
                let norm = 1 / Float(k).squareRoot()
                do { return Tensor(shape: [k, k], values: try Hadamard.matrix(order: k).map { $0 * norm }) } catch {
                    throw FlatQuantError("FlatQuant transform \(prefix) (\(f.a) x \(f.b)): \(error); start it orthogonal instead")
                }
            }
        }
        try self.init(left: try factor(f.a), right: try factor(f.b), scale: s, name: prefix)
    }

    /// The identity transform of width n with balanced factors, parameters named `prefix.left` etc.
    package convenience init(width n: Int, name prefix: String) {
        var unused = SeededRNG(seed: 0)
        try! self.init(width: n, name: prefix, start: .identity, rng: &unused)
    }

    /// A transform with these factors and channel scales (shared, not copied).
    package init(left l: Tensor, right r: Tensor, scale s: Tensor, name prefix: String) throws {
        guard l.rank == 2, r.rank == 2, l.shape[0] == l.shape[1], r.shape[0] == r.shape[1], s.count == l.shape[0] * r.shape[0] else {
            throw FlatQuantError("FlatQuant transform \(prefix): factors \(l.shape) and \(r.shape) with \(s.count) scales do not form a square transform")
        }
        factors = KroneckerFactors(a: l.shape[0], b: r.shape[0])
        left = Parameter(name: prefix + ".left", value: l)
        right = Parameter(name: prefix + ".right", value: r)
        scale = Parameter(name: prefix + ".scale", value: s)
        try refreshInverse(prefix)
    }

    /// Whether training moves L, R and s (FlatQuant's calibration); false once they are fixed
    /// (QAT from a FlatQuant init): then the transform has no parameters and adds no gradients.
    package var trainsParameters = true
    package var parameters: [Parameter] { trainsParameters ? [left, right, scale] : [] }
    package var width: Int { factors.n }

    /// Re-derives L⁻¹ and R⁻¹ from the current parameters (after an optimizer step).
    package func refreshInverse(_ what: String = "") throws {
        guard let li = SmallMatrix.inverse(left.value.array, size: factors.a),
              let ri = SmallMatrix.inverse(right.value.array, size: factors.b) else {
            throw FlatQuantError("FlatQuant transform \(left.name): a factor became singular; lower the calibration learning rate")
        }
        leftInverseT = SmallMatrix.transposed(li, size: factors.a)
        rightInverseT = SmallMatrix.transposed(ri, size: factors.b)
    }

    private func scratch(_ count: Int, _ k: Int) -> [UnsafeMutablePointer<Float>] {
        if buffers.count != k || buffers[0].count < count { buffers = (0..<k).map { _ in Tensor(shape: [count]) } }
        return buffers.map(\.ptr)
    }

    // MARK: - Activation side

    /// y = (x ⊙ s)(L ⊗ R). x, y: (rows, n).
    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width n: Int) {
        precondition(n == factors.n, "FlatQuant transform of \(factors.n) on rows of \(n)")
        let b = scratch(rows * n, 3)
        Self.apply(x, into: y, rows: rows, factors: factors, left: left.value.ptr, right: right.value.ptr,
                   scale: scale.value.ptr, scratch: b[0], scratch2: b[1])
    }

    /// y = (x ⊙ s)(L ⊗ R) with two scratch buffers of rows * n (y must not alias them or x).
    static func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, factors: KroneckerFactors,
                      left: UnsafePointer<Float>, right: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>, scratch2: UnsafeMutablePointer<Float>) {
        scaleRows(x, by: scale, into: scratch, rows: rows, n: factors.n)
        factors.apply(scratch, into: y, rows: rows, left: left, right: right, scratch: scratch2)
    }

    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width n: Int) {
        let b = scratch(rows * n, 3)
        Self.scaleRows(x, by: scale.value.ptr, into: b[0], rows: rows, n: n)
        // d(x ⊙ s) into dx, then ds += Σ x ⊙ d(x ⊙ s) and dx = d(x ⊙ s) ⊙ s.
        let trains = trainsParameters
        factors.backward(x: b[0], dy: dy, dx: dx, rows: rows, left: left.value.ptr, right: right.value.ptr,
                         dLeft: trains ? left.grad.ptr : nil, dRight: trains ? right.grad.ptr : nil, scratch: b[1], scratch2: b[2])
        let s = scale.value.ptr, ds = scale.grad.ptr
        for r in 0..<rows {
            let xr = x + r * n, dr = dx + r * n
            for j in 0..<n {
                if trains { ds[j] += xr[j] * dr[j] }
                dr[j] *= s[j]
            }
        }
    }

    // MARK: - Weight side

    /// W P⁻ᵀ for the weight w: (rows, n) (its rows are output channels): each row (w / s)(L⁻ᵀ ⊗ R⁻ᵀ).
    package func transformWeight(_ w: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, rows: Int) {
        let n = factors.n, b = scratch(rows * n, 3)
        let s = scale.value.ptr
        for r in 0..<rows { for j in 0..<n { b[0][r * n + j] = w[r * n + j] / s[j] } }
        leftInverseT.withUnsafeBufferPointer { l in
            rightInverseT.withUnsafeBufferPointer { rr in
                factors.apply(b[0], into: out, rows: rows, left: l.baseAddress!, right: rr.baseAddress!, scratch: b[1])
            }
        }
    }

    /// Given dL/d(W P⁻ᵀ) for the weight w, ADDS the gradients of L, R and s, and of w into
    /// `dWeight` when given (L, R and s only while `trainsParameters`). With u = w / s, L' = L⁻ᵀ:
    /// dL = -(L⁻¹ dL' L⁻¹)ᵀ (likewise R), ds = -Σ w du / s².
    package func weightBackward(_ w: UnsafePointer<Float>, dTransformed: UnsafePointer<Float>, rows: Int,
                                dWeight: UnsafeMutablePointer<Float>? = nil) {
        let n = factors.n, a = factors.a, bb = factors.b
        let buf = scratch(rows * n, 3)
        let s = scale.value.ptr
        for r in 0..<rows { for j in 0..<n { buf[0][r * n + j] = w[r * n + j] / s[j] } }
        let du = Tensor(shape: [rows * n]), trains = trainsParameters
        var dl = [Float](repeating: 0, count: a * a), dr = [Float](repeating: 0, count: bb * bb)
        leftInverseT.withUnsafeBufferPointer { l in
            rightInverseT.withUnsafeBufferPointer { rr in
                dl.withUnsafeMutableBufferPointer { dlp in
                    dr.withUnsafeMutableBufferPointer { drp in
                        factors.backward(x: buf[0], dy: dTransformed, dx: du.ptr, rows: rows, left: l.baseAddress!, right: rr.baseAddress!,
                                         dLeft: trains ? dlp.baseAddress! : nil, dRight: trains ? drp.baseAddress! : nil,
                                         scratch: buf[1], scratch2: buf[2])
                    }
                }
            }
        }
        if trains {
            addInverseGradient(dl, inverseT: leftInverseT, size: a, into: left.grad.ptr)
            addInverseGradient(dr, inverseT: rightInverseT, size: bb, into: right.grad.ptr)
        }
        let ds = scale.grad.ptr
        for r in 0..<rows {
            for j in 0..<n {
                let g = du.ptr[r * n + j]
                if trains { ds[j] -= w[r * n + j] * g / (s[j] * s[j]) }
                if let dWeight { dWeight[r * n + j] += g / s[j] }
            }
        }
    }

    /// For M' = (M⁻¹)ᵀ and G' = dL/dM': dL/dM = -(M⁻¹ G' M⁻¹)ᵀ, added into grad.
    private func addInverseGradient(_ g: [Float], inverseT: [Float], size k: Int, into grad: UnsafeMutablePointer<Float>) {
        let inv = SmallMatrix.transposed(inverseT, size: k)
        let p = SmallMatrix.product(SmallMatrix.product(inv, g, size: k), inv, size: k)
        for i in 0..<k { for j in 0..<k { grad[i * k + j] -= p[j * k + i] } }
    }

    private static func scaleRows(_ x: UnsafePointer<Float>, by s: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let xr = x + r * n, yr = y + r * n
            for j in 0..<n { yr[j] = xr[j] * s[j] }
        }
    }
}

/// An activation (or KV-cache) fake-quantizer whose clip ratio is learned: c = sigmoid(α),
/// FlatQuant's learnable activation clipping. Forward is `ActivationQuantizer` at ratio c;
/// backward passes dy inside the clipped range (straight-through) and gives α the gradient of
/// x̂ = s (q - z) with the grid scaling with c (the zero point does not: -c min / (c (max - min)) / Qp):
///     inside:  dx̂/dc = (round(x/s) - x/s) s / c      clamped:  dx̂/dc = (q_clamped - z) s / c.
/// The group's min and max are constants, as in `ActivationQuantizer`.
package final class LearnableClipQuantizer: TrainableInputTransform {
    package let bits: Int
    package let symmetric: Bool
    package let groupSize: Int
    package let logit: Parameter    // (1): α

    /// Starts at c = sigmoid(initialLogit) (FlatQuant starts its clip ratios near 1).
    package init(bits: Int, symmetric: Bool = false, groupSize: Int = 0, initialLogit: Float = 5, name: String) {
        self.bits = bits
        self.symmetric = symmetric
        self.groupSize = groupSize
        let t = Tensor(shape: [1])
        t.ptr[0] = initialLogit
        logit = Parameter(name: name, value: t)
    }

    package var parameters: [Parameter] { [logit] }
    package var clipRatio: Float { 1 / (1 + expf(-logit.value.ptr[0])) }
    package var quantizer: ActivationQuantizer {
        ActivationQuantizer(bits: bits, symmetric: symmetric, clipRatio: clipRatio, groupSize: groupSize)
    }

    package func forward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        quantizer.forward(x, into: y, rows: rows, width: width)
    }

    package func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        let q = quantizer, c = q.clipRatio
        q.backward(x: x, dy: dy, dx: dx, rows: rows, width: width)
        let chunks = max(1, min(rows, Threads.count))
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { part in
            let p = part.baseAddress!
            Threads.parallelFor(chunks) { range in
                for chunk in range {
                    var sum: Double = 0
                    let first = rows * chunk / chunks, last = rows * (chunk + 1) / chunks
                    q.forEachGroup(rows: last - first, width: width, parallel: false) { offset, count in
                        let base = first * width + offset
                        guard let g = q.grid(x + base, count) else { return }
                        for j in 0..<count {
                            let u = x[base + j] / g.scale
                            let code = u.rounded(.toNearestOrEven) + g.zero
                            let slope = code < g.lowCode ? (g.lowCode - g.zero) : code > g.highCode ? (g.highCode - g.zero)
                                : (u.rounded(.toNearestOrEven) - u)
                            sum += Double(dy[base + j] * slope * g.scale)
                        }
                    }
                    p[chunk] = sum
                }
            }
        }
        // dα = Σ dy dx̂/dc · c (1 - c), with dx̂/dc = slope s / c.
        logit.grad.ptr[0] += Float(partial.reduce(0, +)) * (1 - c)
    }
}

/// Where a FlatQuant checkpoint keeps its transforms, beside the weights (docs/FORMATS.md):
/// `model.layers.N.flatquant.<site>.left`, `.right`, `.scale` (the factors L, R and channel
/// scales s), `.act_clip` (the site's activation clip ratio), `model.layers.N.flatquant.kv_clip`.
package enum FlatQuantLayout {
    /// The `rqat_rotation` method of a FlatQuant checkpoint.
    package static let method = "flatquant"

    static func siteName(_ site: LinearSite) -> String {
        switch site {
        case .qkv: "qkv"
        case .output: "output"
        case .gateUp: "gate_up"
        case .down: "down"
        }
    }

    package static func prefix(_ l: Int, _ site: LinearSite) -> String { DecoderArchitecture.layerPrefix(l) + "flatquant." + siteName(site) }
    package static func kvClipName(_ l: Int) -> String { DecoderArchitecture.layerPrefix(l) + "flatquant.kv_clip" }
    /// The per-head transforms after RoPE (with KV quantization): keys k P and queries q P⁻ᵀ;
    /// values v P, o_proj's weight carrying (I ⊗ P)⁻ᵀ.
    package enum HeadSite: String, CaseIterable, Sendable {
        case key = "k", value = "v"
    }
    /// A head transform's parameters: `model.layers.N.flatquant.k.left` etc.
    package static func headPrefix(_ l: Int, _ site: HeadSite) -> String { DecoderArchitecture.layerPrefix(l) + "flatquant." + site.rawValue }
    package static func activationClipName(_ l: Int, _ site: LinearSite) -> String { prefix(l, site) + ".act_clip" }
    /// Every tensor block l of a FlatQuant checkpoint may hold (the clip ratios only with
    /// activation or KV quantization, the head transforms only with KV quantization).
    package static func tensorNames(layer l: Int) -> [String] {
        let parts = ["left", "right", "scale"]
        return LinearSite.allCases.flatMap { site in parts.map { prefix(l, site) + "." + $0 } + [activationClipName(l, site)] }
            + [kvClipName(l)] + HeadSite.allCases.flatMap { site in parts.map { headPrefix(l, site) + "." + $0 } }
    }
    /// Whether a checkpoint may lack the tensor: the clip ratios, and the head transforms (which
    /// checkpoints written before they were built do not have).
    package static func isOptional(_ name: String) -> Bool {
        name.hasSuffix(".act_clip") || name.hasSuffix(".kv_clip") || HeadSite.allCases.contains { name.contains(".flatquant.\($0.rawValue).") }
    }

    /// Calibration's per-row weight clip logits (not saved: the quantized weights carry their grids).
    package static func weightClipName(_ weight: String) -> String { weight + ".flatquant_clip" }
}

extension DecoderWeights {
    /// Installs a FlatQuant checkpoint's online transforms (x → x P) at every linear site, each
    /// followed by the activation quantizer at its learned clip ratio, and the KV-cache quantizer
    /// at the block's; the bit widths come from the tensors present (`ActivationQuantSpec` of the
    /// checkpoint), so call it instead of `installActivationQuant`. Throws naming a missing tensor.
    package func installFlatQuant(from source: any WeightSource, activation: ActivationQuantSpec? = nil) throws {
        for (l, layer) in layers.enumerated() {
            for site in LinearSite.allCases {
                let (transform, quantizer) = try FlatQuantLayout.site(l, site, from: source, activation: activation)
                layer.linear(site).inputTransforms = [FrozenFlatQuantTransform(transform)] + (quantizer.map { [InPlaceActivationQuantizer($0)] } ?? [])
            }
            if let kv = try FlatQuantLayout.kvQuantizer(l, from: source, activation: activation, headDim: config.headDim) {
                layer.cacheTransforms = [InPlaceActivationQuantizer(kv, parallel: false)]
            }
            layer.keyTransform = try FlatQuantLayout.headTransform(l, .key, from: source).map(FrozenHeadTransform.init)
            layer.valueTransform = try FlatQuantLayout.headTransform(l, .value, from: source).map(FrozenHeadTransform.init)
        }
    }
}

extension FlatQuantLayout {
    /// Site `site` of block l as `source` stores it: its transform, and the activation quantizer
    /// at its learned clip (nil without activation bits). Both decoders install these.
    package static func site(_ l: Int, _ site: LinearSite, from source: any WeightSource,
                             activation: ActivationQuantSpec?) throws -> (transform: FlatQuantTransform, quantizer: ActivationQuantizer?) {
        let p = prefix(l, site)
        let transform = try FlatQuantTransform(left: try source.tensor(p + ".left"), right: try source.tensor(p + ".right"),
                                               scale: try source.tensor(p + ".scale"), name: p)
        let quantizer = try activation?.activationBits.map { bits in
            ActivationQuantizer(bits: bits, symmetric: activation!.activationSymmetric,
                                clipRatio: try DecoderWeights.storedRatio(source, activationClipName(l, site)))
        }
        return (transform, quantizer)
    }

    /// Block l's per-head key or value transform (nil when the checkpoint has none).
    package static func headTransform(_ l: Int, _ site: HeadSite, from source: any WeightSource) throws -> FlatQuantTransform? {
        let p = headPrefix(l, site)
        guard source.has(p + ".left") else { return nil }
        return try FlatQuantTransform(left: try source.tensor(p + ".left"), right: try source.tensor(p + ".right"),
                                      scale: try source.tensor(p + ".scale"), name: p)
    }

    /// Block l's KV-cache quantizer at its learned clip (nil without KV bits).
    package static func kvQuantizer(_ l: Int, from source: any WeightSource, activation: ActivationQuantSpec?, headDim: Int) throws -> ActivationQuantizer? {
        try activation?.kvBits.map { .kvCache(bits: $0, headDim: headDim, clipRatio: try DecoderWeights.storedRatio(source, kvClipName(l))) }
    }
}

extension DecoderWeights {
    /// A clip ratio stored as a one-element tensor (1 when absent), checked to be in (0, 1].
    package static func storedRatio(_ source: any WeightSource, _ name: String) throws -> Float {
        guard source.has(name) else { return 1 }
        let ratio = try source.tensor(name).array.first ?? .nan
        guard ratio > 0 && ratio <= 1 else {
            throw FlatQuantError("\(source.path): \(name) is \(ratio), not a clip ratio in (0, 1]; re-run `rqat ptq --method flatquant`")
        }
        return ratio
    }
}

/// A calibrated FlatQuant transform run in place by the inference decoder (x → x P). Thread-safe:
/// scratch is allocated per call.
package final class FrozenFlatQuantTransform: LinearInputTransform {
    let left: Tensor, right: Tensor, scale: Tensor
    let factors: KroneckerFactors
    package init(_ t: FlatQuantTransform) {
        left = t.left.value; right = t.right.value; scale = t.scale.value; factors = t.factors
    }
    /// diag(s)(L ⊗ R) from the tensors themselves: L (a, a), R (b, b), s (a b).
    init(left l: Tensor, right r: Tensor, scale s: Tensor) {
        left = l; right = r; scale = s; factors = KroneckerFactors(a: l.shape[0], b: r.shape[0])
    }
    package func transform(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        precondition(width == factors.n, "FlatQuant transform of \(factors.n) on rows of \(width)")
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * rows * width) { buf in
            let input = buf.baseAddress!, n = rows * width
            input.update(from: x, count: n)
            FlatQuantTransform.apply(input, into: x, rows: rows, factors: factors, left: left.ptr, right: right.ptr,
                                     scale: scale.ptr, scratch: input + n, scratch2: input + 2 * n)
        }
    }
}
