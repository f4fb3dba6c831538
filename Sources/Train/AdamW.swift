import Foundation
import Formats
import Tensors

// MARK: - Selecting parameters by name

/// Matches Hugging Face parameter names such as `model.layers.3.self_attn.q_proj.weight`.
///
/// A pattern with a `*` is a glob over the WHOLE name, where `*` stands for any run of characters
/// (dots included): `model.layers.*.mlp.*` matches every MLP weight, `*.bias` every bias.
/// A pattern without `*` matches when it occurs anywhere in the name (`norm` matches
/// `input_layernorm.weight` and `model.norm.weight`). There is no other special character.
package enum NamePattern {
    package static func matches(_ pattern: String, _ name: String) -> Bool {
        guard pattern.contains("*") else { return name.contains(pattern) }
        return glob(Array(pattern.utf8)[...], Array(name.utf8)[...])
    }

    package static func matchesAny(_ patterns: [String], _ name: String) -> Bool {
        patterns.contains { matches($0, name) }
    }

    /// Literal pieces between the stars must appear in order; the first piece anchors at the
    /// start and the last at the end (unless the pattern starts/ends with `*`).
    private static func glob(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        let pieces = pattern.split(separator: UInt8(ascii: "*"), omittingEmptySubsequences: false)
        var rest = name
        for (i, piece) in pieces.enumerated() {
            if i == 0 {
                guard rest.starts(with: piece) else { return false }
                rest = rest.dropFirst(piece.count)
            } else if i == pieces.count - 1 {
                return rest.count >= piece.count && rest.suffix(piece.count).elementsEqual(piece)
            } else if !piece.isEmpty {
                guard let at = firstIndex(of: piece, in: rest) else { return false }
                rest = rest[(at + piece.count)...]
            }
        }
        return rest.isEmpty  // a pattern without `*` never gets here
    }

    private static func firstIndex(of piece: ArraySlice<UInt8>, in text: ArraySlice<UInt8>) -> Int? {
        guard piece.count <= text.count else { return nil }
        var i = text.startIndex
        while i + piece.count <= text.endIndex {
            if text[i..<(i + piece.count)].elementsEqual(piece) { return i }
            i += 1
        }
        return nil
    }
}

/// Marks every parameter whose name matches one of `patterns` (see `NamePattern`) as frozen and
/// returns the names frozen, so a caller can report them (and notice a pattern matching nothing).
@discardableResult
package func freeze(_ parameters: [Parameter], matching patterns: [String]) -> [String] {
    var frozen: [String] = []
    for p in parameters where NamePattern.matchesAny(patterns, p.name) {
        p.frozen = true
        frozen.append(p.name)
    }
    return frozen
}

/// Which parameters get weight decay.
///
/// The usual recipe: decay weight matrices, but not embeddings (decay pulls rare tokens' rows to
/// zero, since they rarely get a gradient to push back) and not norm gains or biases (their scale
/// is meaningful and they are few). `include` wins over everything; then `exclude`; then rank.
package struct WeightDecayRule: Codable, Equatable, Sendable {
    /// Names matching any of these are always decayed.
    package var include: [String]
    /// Names matching any of these are never decayed.
    package var exclude: [String]
    /// Below this rank a parameter is not decayed (2: only matrices, so no biases or gains).
    package var minimumRank: Int

    package init(include: [String] = [], exclude: [String] = [DecoderArchitecture.embeddingPattern, "norm", "*_scale", "*_zero"], minimumRank: Int = 2) {
        self.include = include
        self.exclude = exclude
        self.minimumRank = minimumRank
    }

    package static let standard = WeightDecayRule()

    package func decays(name: String, rank: Int) -> Bool {
        if NamePattern.matchesAny(include, name) { return true }
        if NamePattern.matchesAny(exclude, name) { return false }
        return rank >= minimumRank
    }
}

// MARK: - AdamW

/// AdamW with decoupled weight decay, computing exactly what `torch.optim.AdamW` computes
/// (single-tensor path, `amsgrad=False`, `maximize=False`):
///
///     t += 1
///     p  = p * (1 - lr * wd)                       (only parameters chosen by `decay`)
///     m  = m + (1 - b1) * (g - m)                  (= b1 m + (1-b1) g, torch's lerp form)
///     v  = v * b2 + (1 - b2) * g * g
///     p  = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
///
/// Scalars are formed in Double, as Python does, and the element loop runs in fp32, as torch does.
///
/// Gradient accumulation is the caller's: backward passes add into `Parameter.grad`, then
/// `step(lr:)`, then `zeroGrad()`. Frozen parameters are skipped (no update, no decay).
/// One step counter serves all parameters (torch keeps one per parameter; they agree unless a
/// parameter is unfrozen part-way through a run, in which case its bias correction starts late).
package final class AdamW {
    package var beta1: Double
    package var beta2: Double
    package var eps: Double
    package var weightDecay: Double
    package let decayRule: WeightDecayRule

    /// Steps taken so far (torch's `state['step']`); the next step uses `stepCount + 1`.
    package private(set) var stepCount = 0
    /// The first and second moments by parameter name (torch's `exp_avg`, `exp_avg_sq`).
    package private(set) var moments: [String: (m: Tensor, v: Tensor)] = [:]

    package let parameters: [Parameter]
    /// Names of the parameters weight decay applies to (fixed at construction).
    package let decayed: Set<String>

    package init(parameters: [Parameter], beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8,
                weightDecay: Double = 0.01, decayRule: WeightDecayRule = .standard) {
        var seen = Set<String>()
        for p in parameters { precondition(seen.insert(p.name).inserted, "parameter \(p.name) listed twice") }
        self.parameters = parameters
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.decayRule = decayRule
        decayed = Set(parameters.filter { decayRule.decays(name: $0.name, rank: $0.value.rank) }.map(\.name))
        // Allocated up front (torch allocates lazily) so a checkpoint always holds every moment.
        for p in parameters where !p.frozen { allocateMoments(p) }
    }

    private func allocateMoments(_ p: Parameter) {
        moments[p.name] = (Tensor(shape: p.value.shape), Tensor(shape: p.value.shape))
    }

    /// One update of every non-frozen parameter from its accumulated gradient.
    package func step(lr: Double) {
        stepCount += 1
        let t = Double(stepCount)
        let biasCorrection1 = 1 - pow(beta1, t)
        let biasCorrection2Sqrt = (1 - pow(beta2, t)).squareRoot()
        let scalars = Scalars(decayFactor: Float(1 - lr * weightDecay),
                              w1: Float(1 - beta1), b2: Float(beta2), c2: Float(1 - beta2),
                              negStepSize: Float(-(lr / biasCorrection1)),
                              bc2Sqrt: Float(biasCorrection2Sqrt), eps: Float(eps))
        for p in parameters where !p.frozen {
            if moments[p.name] == nil { allocateMoments(p) }
            let (m, v) = moments[p.name]!
            let decays = weightDecay != 0 && decayed.contains(p.name)
            Self.update(p.value.ptr, p.grad.ptr, m.ptr, v.ptr, count: p.value.count, decays: decays, scalars)
        }
    }

    private struct Scalars {
        let decayFactor, w1, b2, c2, negStepSize, bc2Sqrt, eps: Float
    }

    /// The element loop, split across threads for large tensors (each element is independent).
    private static func update(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                               _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                               count: Int, decays: Bool, _ s: Scalars) {
        func run(_ range: Range<Int>) {
            for i in range {
                var x = p[i]
                if decays { x *= s.decayFactor }
                let gi = g[i]
                let mi = m[i] + s.w1 * (gi - m[i])
                let vi = v[i] * s.b2 + s.c2 * (gi * gi)
                m[i] = mi
                v[i] = vi
                let denom = vi.squareRoot() / s.bc2Sqrt + s.eps
                p[i] = x + s.negStepSize * (mi / denom)
            }
        }
        let chunk = 1 << 15
        if count <= chunk { run(0..<count); return }
        let chunks = (count + chunk - 1) / chunk
        Threads.parallelFor(chunks) { range in
            run(range.lowerBound * chunk..<min(count, range.upperBound * chunk))
        }
    }

    package func zeroGrad() {
        for p in parameters { p.zeroGrad() }
    }

    /// Replaces the state with a saved one (from `TrainCheckpoint`): the step count and, for
    /// every non-frozen parameter, both moments with the parameter's shape.
    package func restore(stepCount: Int, moments saved: [String: (m: Tensor, v: Tensor)], source: String) throws {
        var restored: [String: (m: Tensor, v: Tensor)] = [:]
        for p in parameters {
            guard let pair = saved[p.name] else {
                if p.frozen { continue }
                throw TrainError("\(source): no optimizer moments for \(p.name); the checkpoint belongs to another model or froze other parameters")
            }
            guard pair.m.shape == p.value.shape, pair.v.shape == p.value.shape else {
                throw TrainError("\(source): optimizer moments for \(p.name) have shape \(pair.m.shape), the parameter has \(p.value.shape)")
            }
            restored[p.name] = (pair.m.copy(), pair.v.copy())
        }
        self.stepCount = stepCount
        self.moments = restored
    }
}

// MARK: - Gradients

/// Whole-model operations on accumulated gradients.
package enum Gradients {
    /// The L2 norm of all non-frozen gradients taken together (summed in Double).
    package static func globalNorm(_ parameters: [Parameter]) -> Double {
        var sum = 0.0
        for p in parameters where !p.frozen { sum += sumOfSquares(p.grad.ptr, p.grad.count) }
        return sum.squareRoot()
    }

    /// Scales gradients so their global norm is at most `maxNorm`, as
    /// `torch.nn.utils.clip_grad_norm_` does: scale = min(1, maxNorm / (norm + 1e-6)).
    /// Returns the norm BEFORE clipping (what a log should show). A non-finite norm leaves the
    /// gradients alone (torch would multiply them by NaN); check `hasNonFinite` and skip the step.
    @discardableResult
    package static func clipGlobalNorm(_ parameters: [Parameter], maxNorm: Double) -> Double {
        let norm = globalNorm(parameters)
        guard norm.isFinite else { return norm }
        let scale = Float(min(1, maxNorm / (norm + 1e-6)))
        if scale < 1 {
            for p in parameters where !p.frozen {
                let g = p.grad.ptr
                for i in 0..<p.grad.count { g[i] *= scale }
            }
        }
        return norm
    }

    /// True if any non-frozen gradient holds a NaN or an infinity (e.g. after an fp overflow);
    /// the caller should then skip the optimizer step and zero the gradients.
    package static func hasNonFinite(_ parameters: [Parameter]) -> Bool {
        for p in parameters where !p.frozen {
            // x * 0 is 0 for finite x and NaN for NaN or ±inf, so one vectorisable sum says it.
            let g = p.grad.ptr
            var probe: Float = 0
            for i in 0..<p.grad.count { probe += g[i] * 0 }
            if probe != 0 || probe.isNaN { return true }
        }
        return false
    }

    package static func zero(_ parameters: [Parameter]) {
        for p in parameters { p.zeroGrad() }
    }

    /// Four Double accumulators so the loop is not one long dependency chain.
    private static func sumOfSquares(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> Double {
        var a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
        var i = 0
        while i + 4 <= n {
            let x0 = Double(x[i]), x1 = Double(x[i + 1]), x2 = Double(x[i + 2]), x3 = Double(x[i + 3])
            a0 += x0 * x0; a1 += x1 * x1; a2 += x2 * x2; a3 += x3 * x3
            i += 4
        }
        while i < n { let xi = Double(x[i]); a0 += xi * xi; i += 1 }
        return (a0 + a1) + (a2 + a3)
    }
}
