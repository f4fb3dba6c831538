import CKernels
import Foundation
import Tensors

/// Knowledge-distillation loss: forward KL(teacher || student) at temperature T, per position,
/// weighted by a per-position mask (completion tokens only) and divided by `normalizer` (like
/// `CrossEntropy`: the number of predicted tokens of the whole optimizer step). With
/// `options.divergence` the full-logit and top-k losses are reverse KL or JSD(beta) instead
/// (`KDDivergences`, same conventions); the formulas below are forward KL's.
///
/// Notation per row: z = s / T (student logits at temperature T), q = softmax(z), p = the teacher
/// distribution at temperature T. Since dz/ds = 1/T, every gradient below carries a 1/T.
///
/// Temperature scaling convention: with `scaleByTemperatureSquared` (the default, as in Hinton et
/// al. 2015) the loss *and* the gradient are multiplied by T^2, so the gradient magnitude
/// ((q - p) * T) stays comparable across temperatures and with a T = 1 cross-entropy term.
///
/// Three encodings of the teacher signal:
/// - `fullLogits`: teacher logits (N, V).
/// - `topK`: k teacher token ids with their log-probabilities (at temperature T) plus the
///   remaining ("tail") mass; the student is bucketed the same way.
/// - `sampled`: m draws from the teacher distribution as (id, count) pairs; unbiased gradient.
///
/// In every variant `gradient` may be `student` itself (in place): each row is read completely
/// (or each element is read before it is written) before being overwritten. Rows with weight 0
/// contribute nothing to the loss and get a zero gradient. Rows run in parallel.
package enum KDLoss {
    package struct Options: Sendable, Equatable {
        /// Softmax temperature T (> 0) applied to the student logits (and, for `fullLogits`,
        /// to the teacher logits; the other encodings carry teacher probabilities already at T).
        package var temperature: Float
        /// Multiply loss and gradient by T^2 (Hinton's convention). Default true.
        package var scaleByTemperatureSquared: Bool
        /// What is minimised: forward KL (the default), reverse KL or JSD(beta) (`KDDivergence`).
        /// The T^2 convention applies to all three alike.
        package var divergence: KDDivergence

        package init(temperature: Float = 1, scaleByTemperatureSquared: Bool = true,
                     divergence: KDDivergence = .forwardKL) {
            precondition(temperature > 0, "temperature must be positive")
            if case .jsd(let beta) = divergence { precondition(beta > 0 && beta < 1, "JSD beta must be in (0, 1)") }
            self.temperature = temperature
            self.scaleByTemperatureSquared = scaleByTemperatureSquared
            self.divergence = divergence
        }

        /// The factor applied to loss and gradient: T^2 or 1.
        var lossScale: Double {
            scaleByTemperatureSquared ? Double(temperature) * Double(temperature) : 1
        }
    }

    // MARK: - Full teacher logits

    /// KL(softmax(t/T) || softmax(s/T)) per row, weighted, summed, divided by `normalizer`
    /// (times T^2 if `options.scaleByTemperatureSquared`).
    ///
    /// loss_i = sum_j p_j (log p_j - log q_j);  d loss_i / d s_j = (q_j - p_j) / T.
    ///
    /// student, teacher: (N, V); weights: N. `gradient` (N, V) may alias `student` (not `teacher`).
    package static func fullLogits(student: UnsafePointer<Float>, vocab v: Int,
                                  teacher: UnsafePointer<Float>,
                                  weights: [Float], normalizer: Double,
                                  options: Options = Options(),
                                  gradient: UnsafeMutablePointer<Float>?) -> Double {
        guard options.divergence == .forwardKL else {
            return KDDivergences.fullLogits(student: student, vocab: v, teacher: teacher, weights: weights,
                                            normalizer: normalizer, options: options, gradient: gradient)
        }
        let n = weights.count
        let invT = 1 / options.temperature
        let lossScale = options.lossScale
        return RowLosses.sum(rows: n, vocab: v, weights: weights, normalizer: normalizer, gradient: gradient) { r, w, gr in
            let s = student + r * v, t = teacher + r * v
            let (_, logZs) = RowLosses.logSumExp(s, v, invT: invT)
            let (_, logZt) = RowLosses.logSumExp(t, v, invT: invT)
            var kl: Double = 0
            for j in 0..<v {
                let logP = t[j] * invT - logZt
                let p = expf(logP)
                if p > 0 { kl += Double(p) * Double(logP - (s[j] * invT - logZs)) }
            }
            if let gr {
                let scale = Float(Double(w) / normalizer * lossScale) * invT
                for j in 0..<v {
                    let q = expf(s[j] * invT - logZs)
                    let p = expf(t[j] * invT - logZt)
                    gr[j] = (q - p) * scale
                }
            }
            return Double(w) * kl
        } * lossScale
    }

    // MARK: - Top-k + tail

    /// KL between the teacher and student distributions bucketed into the teacher's top-k tokens
    /// plus one tail bucket:
    ///
    ///   loss_i = sum_{k in K} p_k log(p_k / q_k) + p_tail log(p_tail / q_tail),
    ///   q_tail = sum_{j not in K} q_j = 1 - sum_{k in K} q_k.
    ///
    /// Gradient (z = s/T, S = sum_{k in K} p_k + p_tail, which is 1 for a consistent teacher;
    /// using S keeps the gradient exact for the loss as written even when it is not):
    ///   d log q_k / d z_j    = [j = k] - q_j
    ///   d log q_tail / d z_j = q_j ([j not in K] / q_tail - 1)
    /// so
    ///   j in K:      d loss_i / d s_j = (S q_j - p_j) / T
    ///   j not in K:  d loss_i / d s_j = q_j (S - p_tail / q_tail) / T
    /// (tokens outside the top-k are pushed together, through q_tail, toward total mass p_tail).
    ///
    /// ids, logProbs: N*k (row-major; ids distinct within a row, teacher log-probabilities at
    /// temperature T); tailMass: N (the teacher's remaining mass 1 - sum_k p_k; values <= 0 drop
    /// the tail term, as 0 log 0 = 0). q_tail is summed directly over the tokens outside the top-k
    /// (in Double), not as 1 - sum q_k, to avoid cancellation.
    package static func topK(student: UnsafePointer<Float>, vocab v: Int,
                            ids: [Int32], logProbs: [Float], k: Int, tailMass: [Float],
                            weights: [Float], normalizer: Double,
                            options: Options = Options(),
                            gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = weights.count
        precondition(k >= 1 && k <= v, "k must be in 1...vocab")
        precondition(ids.count == n * k && logProbs.count == n * k, "ids and logProbs hold N*k values")
        precondition(tailMass.count == n, "one tail mass per row")
        guard options.divergence == .forwardKL else {
            return KDDivergences.topK(student: student, vocab: v, ids: ids, logProbs: logProbs, k: k, tailMass: tailMass,
                                      weights: weights, normalizer: normalizer, options: options, gradient: gradient)
        }
        let invT = 1 / options.temperature
        let lossScale = options.lossScale
        var rowLoss = [Double](repeating: 0, count: n)
        rowLoss.withUnsafeMutableBufferPointer { losses in
            Threads.parallelFor(n) { rows in
                // slot[j] = (position of j in the row's top-k) + 1, or 0 outside the top-k.
                var slot = [Int32](repeating: 0, count: v)
                slot.withUnsafeMutableBufferPointer { slot in
                    for r in rows {
                        let s = student + r * v
                        let w = weights[r]
                        guard w > 0 else {
                            if let g = gradient { (g + r * v).update(repeating: 0, count: v) }
                            continue
                        }
                        for kk in 0..<k {
                            let id = Int(ids[r * k + kk])
                            precondition(id >= 0 && id < v, "top-k id \(id) outside the vocabulary (\(v))")
                            precondition(slot[id] == 0, "duplicate top-k id \(id) in row \(r)")
                            slot[id] = Int32(kk + 1)
                        }
                        let (m, logZ) = RowLosses.logSumExp(s, v, invT: invT)
                        // Tail of the student: sum over tokens outside the top-k.
                        var tailSum: Double = 0
                        for j in 0..<v where slot[j] == 0 { tailSum += Double(expf(s[j] * invT - m)) }
                        let logQTail = tailSum > 0 ? Float(log(tailSum)) + m - logZ : -Float.infinity
                        let pTail = max(tailMass[r], 0)

                        var kl: Double = 0
                        var sumP: Float = 0
                        for kk in 0..<k {
                            let logP = logProbs[r * k + kk]
                            let p = expf(logP)
                            sumP += p
                            if p > 0 {
                                let id = Int(ids[r * k + kk])
                                kl += Double(p) * Double(logP - (s[id] * invT - logZ))
                            }
                        }
                        if pTail > 0 { kl += Double(pTail) * Double(logf(pTail) - logQTail) }
                        losses[r] = Double(w) * kl

                        if let g = gradient {
                            let gr = g + r * v
                            let scale = Float(Double(w) / normalizer * lossScale) * invT
                            let total = sumP + pTail
                            // q_j * p_tail / q_tail = p_tail * exp(z_j - m) / tailSum (no underflow).
                            let tailShare = tailSum > 0 ? Float(Double(pTail) / tailSum) : 0
                            for j in 0..<v {
                                let zj = s[j] * invT
                                let q = expf(zj - logZ)
                                let sl = Int(slot[j])
                                if sl == 0 {
                                    gr[j] = (q * total - expf(zj - m) * tailShare) * scale
                                } else {
                                    gr[j] = (total * q - expf(logProbs[r * k + sl - 1])) * scale
                                }
                            }
                        }
                        for kk in 0..<k { slot[Int(ids[r * k + kk])] = 0 }
                    }
                }
            }
        }
        return rowLoss.reduce(0, +) / normalizer * lossScale
    }

    // MARK: - Sampled teacher tokens

    /// Monte-Carlo forward KL from m draws of the teacher distribution (at temperature T) per row,
    /// given as (token id, count) pairs (ids may repeat; counts add up).
    ///
    /// With c_j / m the empirical distribution of the draws, the gradient
    ///   d loss_i / d s_j = (q_j - c_j / m) / T
    /// is an unbiased estimate of the forward-KL gradient (q_j - p_j) / T.
    ///
    /// The loss reported is the cross-entropy part  -sum_j (c_j / m) log q_j. The teacher's
    /// entropy term sum_j p_j log p_j does not depend on the student and is omitted, so this is
    /// KL(teacher || student) only up to a constant (an unbiased estimate of KL + H(p)).
    package static func sampled(student: UnsafePointer<Float>, vocab v: Int,
                               draws: [[(id: Int, count: Int)]],
                               weights: [Float], normalizer: Double,
                               options: Options = Options(),
                               gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = weights.count
        precondition(draws.count == n, "one list of draws per row")
        precondition(options.divergence.acceptsSampledSignal,
                     "\(options.divergence) needs teacher probabilities: full logits or top-k, not sampled draws")
        let invT = 1 / options.temperature
        let lossScale = options.lossScale
        return RowLosses.sum(rows: n, vocab: v, weights: weights, normalizer: normalizer, gradient: gradient) { r, w, gr in
            let s = student + r * v
            let row = draws[r]
            var m = 0
            for d in row {
                precondition(d.id >= 0 && d.id < v, "drawn id \(d.id) outside the vocabulary (\(v))")
                precondition(d.count >= 0, "negative draw count")
                m += d.count
            }
            precondition(m > 0, "row \(r) has weight > 0 but no draws")
            let (_, logZ) = RowLosses.logSumExp(s, v, invT: invT)
            var ce: Double = 0
            for d in row where d.count > 0 {
                ce -= Double(d.count) * Double(s[d.id] * invT - logZ)
            }
            if let gr {
                let scale = Float(Double(w) / normalizer * lossScale) * invT
                for j in 0..<v { gr[j] = expf(s[j] * invT - logZ) * scale }
                let perDraw = scale / Float(m)
                for d in row where d.count > 0 { gr[d.id] -= Float(d.count) * perDraw }
            }
            return Double(w) * ce / Double(m)
        } * lossScale
    }
}
