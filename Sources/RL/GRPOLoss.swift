import Foundation
import Tensors
import Train

/// How per-token surrogate losses are averaged into a batch loss. Each gives every completion
/// token a coefficient c_t (`coefficients`), and the loss is sum_t c_t * l_t.
///
/// - `token-mean`: c = 1 / (tokens of the batch). Every token weighs the same, so a long
///   completion weighs more than a short one in proportion to its length (DAPO's choice).
/// - `seq-mean`: c = 1 / (completions x own length): the mean over completions of each one's
///   token mean (the original GRPO). A token of a short completion weighs more than one of a long
///   completion: with a positive advantage short answers are pushed harder, with a negative one
///   long wrong answers are penalised less per token, a bias towards long wrong completions.
/// - `dr-grpo`: c = 1 / (completions x the generation budget), a constant (Dr. GRPO): no length
///   normalisation at all, so no length bias from the aggregation; the gradient scale then
///   grows with the completions' lengths.
package enum LossAggregation: String, Codable, Sendable, CaseIterable {
    case tokenMean = "token-mean", seqMean = "seq-mean", drGRPO = "dr-grpo"

    /// Per completion, the coefficient of each of its tokens. `lengths`: completion tokens that
    /// carry a loss, per completion; `budget`: the generation budget (max new tokens).
    package func coefficients(lengths: [Int], budget: Int) -> [Double] {
        let n = Double(max(1, lengths.count))
        switch self {
        case .tokenMean:
            let total = Double(max(1, lengths.reduce(0, +)))
            return lengths.map { _ in 1 / total }
        case .seqMean:
            return lengths.map { $0 > 0 ? 1 / (n * Double($0)) : 0 }
        case .drGRPO:
            return lengths.map { _ in 1 / (n * Double(max(1, budget))) }
        }
    }
}

/// The estimator of KL(policy || reference) per token, from r = log pi_ref(a) - log pi(a) at the
/// sampled token a (Schulman's k1, k2, k3). As a loss term, differentiated through log pi(a) only
/// (the sample stays fixed):
/// - `k1` = -r: its gradient is grad log pi(a), whose expectation under pi is 0, so as a loss
///   term it pulls towards nothing on average (it only makes sense in the reward);
/// - `k2` = r^2 / 2: gradient -r grad log pi(a), in expectation the gradient of KL(pi || ref)
///   (reverse KL), the policy's own divergence;
/// - `k3` = exp(r) - r - 1 (GRPO's): gradient (1 - exp(r)) grad log pi(a), in expectation the
///   gradient of KL(ref || pi) (forward KL), not of the KL it estimates.
package enum KLEstimator: String, Codable, Sendable, CaseIterable {
    case k1, k2, k3

    /// The estimate and its derivative with respect to log pi(a), given log pi(a) and log pi_ref(a).
    @inline(__always)
    package func value(logProb lp: Double, reference ref: Double) -> (kl: Double, dLogProb: Double) {
        let r = ref - lp
        switch self {
        case .k1: return (-r, 1)
        case .k2: return (0.5 * r * r, -r)
        case .k3: let e = Foundation.exp(r); return (e - r - 1, 1 - e)
        }
    }
}

/// GRPO's clipped surrogate on rollout tokens, with an optional KL penalty to a reference policy.
///
/// Per predicted token t (position t predicts token t+1) with completion mask m_t:
///   log pi_t = log softmax(z_t / T)[a_t]    (the policy at the sampling temperature T),
///   rho_t = exp(log pi_t - log pi_old_t),
///   l_t = -w_t min(rho_t A_t, clip(rho_t, 1 - clipLow, 1 + clipHigh) A_t) + beta k(log pi_t, log pi_ref_t),
/// w_t = min(pi_old_t / pi_behaviour_t, tisCap) with truncated importance sampling, else 1,
///   loss = sum_t m_t c_t l_t
/// with A_t the advantage of the completion the token belongs to and c_t its aggregation
/// coefficient (`LossAggregation`). The gradient flows through log pi_t only:
///   dl/dlog pi = -rho A where the unclipped term is the minimum (rho <= 1 + clipHigh for A >= 0,
///   rho >= 1 - clipLow for A < 0), else 0; plus beta dk/dlog pi;
///   dlog pi / dz_j = (onehot_j - softmax(z / T)_j) / T.
package enum GRPOLoss {
    package struct Options: Equatable, Sendable {
        package var temperature: Float = 1
        package var clipLow: Double = 0.2
        package var clipHigh: Double = 0.28
        /// beta of the KL term in the loss (0 = none; needs reference log-probs).
        package var klCoefficient: Double = 0
        package var klEstimator: KLEstimator = .k3
        /// Truncated importance sampling: with the sampler's log-probabilities (`behaviourLogProbs`),
        /// each token's surrogate is weighted by min(pi_old / pi_behaviour, tisCap), a constant of
        /// the sample, correcting for rollouts sampled by an older policy (lag above 0). nil = off.
        package var tisCap: Double?
        package init() {}
    }

    /// Sums over the tokens of one call, for the step's log line.
    package struct Stats: Equatable, Sendable {
        /// Tokens with a loss.
        package var tokens = 0
        /// Tokens whose ratio was clipped (their surrogate gradient is 0).
        package var clipped = 0
        /// Sums over tokens of the policy's entropy at T, of the KL estimate, of |log pi - log pi_old|.
        package var entropy = 0.0
        package var kl = 0.0
        package var ratioGap = 0.0
        package var maxRatioGap = 0.0
        /// With `tisCap`: the sum of the importance weights, and the tokens whose weight the cap cut.
        package var tisWeight = 0.0
        package var tisTruncated = 0

        package init() {}

        package mutating func add(_ o: Stats) {
            tokens += o.tokens; clipped += o.clipped
            entropy += o.entropy; kl += o.kl; ratioGap += o.ratioGap
            maxRatioGap = max(maxRatioGap, o.maxRatioGap)
            tisWeight += o.tisWeight; tisTruncated += o.tisTruncated
        }
    }

    /// logits: (N, V); targets, mask, coefficients, advantages, oldLogProbs: N (nil: the old
    /// policy is the current one, so every ratio is 1); referenceLogProbs: N or nil;
    /// behaviourLogProbs: N, the sampler's (read with `options.tisCap` only). Writes each masked
    /// row's log pi_t into `logProbs` (N, zero elsewhere) and, with `gradient` (which may be
    /// `logits` itself), dloss/dlogits.
    package static func forwardBackward(logits: UnsafePointer<Float>, vocab v: Int, targets: [Int], mask: [Float],
                                       coefficients: [Float], advantages: [Float], oldLogProbs: [Float]?,
                                       referenceLogProbs: [Float]?, behaviourLogProbs: [Float]? = nil, options: Options,
                                       logProbs: UnsafeMutablePointer<Float>,
                                       gradient: UnsafeMutablePointer<Float>?) -> (loss: Double, stats: Stats) {
        let n = targets.count
        precondition(mask.count == n && coefficients.count == n && advantages.count == n && (oldLogProbs?.count ?? n) == n,
                     "one mask entry, coefficient, advantage and old log-prob per position")
        precondition(options.klCoefficient == 0 || referenceLogProbs?.count == n,
                     "a KL term needs one reference log-prob per position")
        precondition(options.tisCap == nil || behaviourLogProbs?.count == n,
                     "truncated importance sampling needs the sampler's log-prob at every position")
        let invT = 1 / options.temperature
        var rowStats = [Stats](repeating: Stats(), count: n)
        var rowLoss = [Double](repeating: 0, count: n)
        rowLoss.withUnsafeMutableBufferPointer { losses in
            rowStats.withUnsafeMutableBufferPointer { stats in
                Threads.parallelFor(n) { rows in
                    for r in rows {
                        let gr = gradient.map { $0 + r * v }
                        guard mask[r] > 0 else {
                            logProbs[r] = 0
                            gr?.update(repeating: 0, count: v)
                            continue
                        }
                        let z = logits + r * v
                        let t = targets[r]
                        precondition(t >= 0 && t < v, "target id \(t) outside the vocabulary (\(v))")
                        let (_, logZ) = RowLosses.logSumExp(z, v, invT: invT)
                        let lp = Double(z[t] * invT - logZ)
                        logProbs[r] = Float(lp)
                        let a = Double(advantages[r]), c = Double(coefficients[r]) * Double(mask[r])
                        let gap = oldLogProbs.map { lp - Double($0[r]) } ?? 0
                        let rho = Foundation.exp(gap)
                        let clipped = min(max(rho, 1 - options.clipLow), 1 + options.clipHigh)
                        let unclippedIsMin = rho * a <= clipped * a
                        var loss = -min(rho * a, clipped * a)
                        var dLogProb = unclippedIsMin ? -rho * a : 0
                        var s = Stats()
                        if let cap = options.tisCap, let behaviour = behaviourLogProbs {
                            let weight = Foundation.exp((oldLogProbs.map { Double($0[r]) } ?? lp) - Double(behaviour[r]))
                            let w = min(weight, cap)
                            loss *= w
                            dLogProb *= w
                            s.tisWeight = w
                            s.tisTruncated = weight > cap ? 1 : 0
                        }
                        s.tokens = 1
                        s.clipped = unclippedIsMin ? 0 : 1
                        s.ratioGap = abs(gap)
                        s.maxRatioGap = abs(gap)
                        if options.klCoefficient != 0, let ref = referenceLogProbs {
                            let (kl, dkl) = options.klEstimator.value(logProb: lp, reference: Double(ref[r]))
                            loss += options.klCoefficient * kl
                            dLogProb += options.klCoefficient * dkl
                            s.kl = kl
                        } else if let ref = referenceLogProbs {
                            s.kl = options.klEstimator.value(logProb: lp, reference: Double(ref[r])).kl
                        }
                        // Entropy at T, and the gradient: dl/dz_j = dl/dlog pi * (onehot_j - p_j) / T.
                        var entropy = 0.0
                        let scale = Float(c * dLogProb) * invT
                        for j in 0..<v {
                            let logp = z[j] * invT - logZ
                            let p = expf(logp)
                            entropy -= Double(p * logp)
                            gr?[j] = -scale * p
                        }
                        gr?[t] += scale
                        s.entropy = entropy
                        losses[r] = c * loss
                        stats[r] = s
                    }
                }
            }
        }
        var total = Stats()
        for s in rowStats where s.tokens > 0 { total.add(s) }
        return (rowLoss.reduce(0, +), total)
    }

    /// log softmax(z_t / T)[target_t] at the masked positions (0 elsewhere): the policy's
    /// log-probabilities of the sampled tokens, without a gradient.
    package static func logProbs(logits: UnsafePointer<Float>, vocab v: Int, targets: [Int], mask: [Float],
                                temperature: Float) -> [Float] {
        let invT = 1 / temperature
        var out = [Float](repeating: 0, count: targets.count)
        out.withUnsafeMutableBufferPointer { out in
            Threads.parallelFor(targets.count) { rows in
                for r in rows where mask[r] > 0 {
                    let z = logits + r * v
                    out[r] = z[targets[r]] * invT - RowLosses.logSumExp(z, v, invT: invT).logZ
                }
            }
        }
        return out
    }
}
