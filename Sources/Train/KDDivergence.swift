import Foundation
import Tensors

/// Which divergence between the teacher distribution P and the student's Q the KD loss
/// minimises (`rqat train --loss kd-fkl|kd-rkl|kd-jsd`), all at the KD temperature.
package enum KDDivergence: Sendable, Equatable, CustomStringConvertible {
    /// KL(P || Q): mass-covering; the only one with an unbiased sampled estimate.
    case forwardKL
    /// KL(Q || P): mode-seeking.
    case reverseKL
    /// The generalized JSD of GKD (Agarwal et al. 2024):
    /// beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q, 0 < beta < 1.
    case jsd(beta: Float)

    /// The name of `--loss`: kd-fkl, kd-rkl, kd-jsd.
    package var description: String {
        switch self {
        case .forwardKL: return "kd-fkl"
        case .reverseKL: return "kd-rkl"
        case .jsd: return "kd-jsd"
        }
    }

    /// Whether a teacher signal of sampled draws can estimate it (only KL(P || Q) is an
    /// expectation under P).
    package var acceptsSampledSignal: Bool { self == .forwardKL }
}

/// Reverse KL and JSD, on full logits and on top-k + tail; `KDLoss.fullLogits` and
/// `KDLoss.topK` call these when `options.divergence` is not forward KL (which keeps its own,
/// unchanged code). Conventions (weights, normalizer, T^2, in-place gradient) as in `KDLoss`.
///
/// Per row, with z = s / T, q = softmax(z), buckets b (tokens, or the top-k tokens plus a tail),
/// a divergence of the form  L = sum_b f_b(q_b)  has  dL/dz_j = q_j (G_b(j) - sum_b q_b G_b),
/// G_b = dL/dq_b (softmax chain rule; for the tail bucket dq_tail/dz_j = q_j ([j in tail] - q_tail)).
/// - reverse KL: L = sum_b q_b (log q_b - log p_b); G_b = a_b + 1 with a_b = log q_b - log p_b,
///   so  dL/dz_j = q_j (a_b(j) - L).
/// - JSD(beta): with m_b = beta p_b + (1 - beta) q_b, the teacher's part contributes
///   -beta (1 - beta) p_b / m_b to G_b and the student's (1 - beta)(log(q_b / m_b) + 1 - (1 - beta) q_b / m_b);
///   they add up to G_b = (1 - beta)(a_b + 1), a_b = log(q_b / m_b), so
///   dL/dz_j = (1 - beta) q_j (a_b(j) - A), A = sum_b q_b a_b = KL(Q || M).
/// Neither step uses sum_b p_b = 1, so both gradients are exact for the losses as written even
/// when the teacher's top-k masses and tail do not add up to 1 (fp16 log-probabilities).
///
/// How the tail bucket enters (top-k + tail): the student's tail mass is q_tail = sum of q_j over
/// the tokens outside the teacher's top-k, the teacher's is the signal's tail mass; the loss is
/// the divergence between these two (k + 1)-bucket distributions, and every token outside the
/// top-k gets the tail's coefficient: dL/ds_j = factor q_j (a_tail - A) / T (factor 1, or
/// 1 - beta). Bucketing loses information, so these approximate the full-vocabulary
/// divergences from below (the data-processing inequality holds for both KLs and for JSD);
/// `rqat bench wire` measures the bias (docs/WIRE.md).
/// Reverse KL takes log max(p_tail, 2^-23): a teacher tail of 0 (1 - sum p_k rounded to 0 in
/// float32, though k < V) would make it infinite. JSD needs no floor: m_tail >= (1 - beta) q_tail.
enum KDDivergences {
    /// The reverse-KL teacher tail floor, the float32 rounding of 1 - sum_k p_k.
    static let tailFloor = Float.ulpOfOne

    /// One bucket's contribution: its loss term, q_b a_b, and a_b.
    @inline(__always)
    static func term(_ divergence: KDDivergence, logP: Float, logQ: Float) -> (loss: Double, qa: Double, a: Float) {
        let q = expf(logQ)
        switch divergence {
        case .reverseKL:
            let a = logQ - logP
            let qa = Double(q) * Double(a)
            return (qa, qa, a)
        case .jsd(let beta):
            let logM = logAddExp(logf(beta) + logP, logf(1 - beta) + logQ)
            let a = logQ - logM
            let qa = Double(q) * Double(a)
            let p = expf(logP)
            let teacher = p > 0 ? Double(p) * Double(logP - logM) : 0
            return (Double(beta) * teacher + Double(1 - beta) * qa, qa, a)
        case .forwardKL:
            preconditionFailure("forward KL has its own code in KDLoss")
        }
    }

    /// The factor in front of q_j (a_b(j) - A): 1 for reverse KL, 1 - beta for JSD.
    static func gradientFactor(_ divergence: KDDivergence) -> Float {
        if case .jsd(let beta) = divergence { return 1 - beta }
        return 1
    }

    @inline(__always)
    static func logAddExp(_ x: Float, _ y: Float) -> Float {
        let m = max(x, y)
        guard m > -.infinity else { return -.infinity }
        return m + log1pf(expf(-abs(x - y)))
    }

    // MARK: - Full logits

    static func fullLogits(student: UnsafePointer<Float>, vocab v: Int, teacher: UnsafePointer<Float>,
                           weights: [Float], normalizer: Double, options: KDLoss.Options,
                           gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = weights.count
        let d = options.divergence
        let invT = 1 / options.temperature
        let lossScale = options.lossScale
        let factor = gradientFactor(d)
        return RowLosses.sum(rows: n, vocab: v, weights: weights, normalizer: normalizer, gradient: gradient) { r, w, gr in
            let s = student + r * v, t = teacher + r * v
            let (_, logZs) = RowLosses.logSumExp(s, v, invT: invT)
            let (_, logZt) = RowLosses.logSumExp(t, v, invT: invT)
            var loss: Double = 0, mean: Double = 0
            for j in 0..<v {
                let x = KDDivergences.term(d, logP: t[j] * invT - logZt, logQ: s[j] * invT - logZs)
                loss += x.loss
                mean += x.qa
            }
            if let gr {
                // Every a_j is recomputed from s and t before gr[j] overwrites s[j] (in place).
                let scale = Float(Double(w) / normalizer * lossScale) * invT * factor
                let center = Float(mean)
                for j in 0..<v {
                    let logQ = s[j] * invT - logZs
                    let a = KDDivergences.term(d, logP: t[j] * invT - logZt, logQ: logQ).a
                    gr[j] = expf(logQ) * (a - center) * scale
                }
            }
            return Double(w) * loss
        } * lossScale
    }

    // MARK: - Top-k + tail

    static func topK(student: UnsafePointer<Float>, vocab v: Int, ids: [Int32], logProbs: [Float], k: Int,
                     tailMass: [Float], weights: [Float], normalizer: Double, options: KDLoss.Options,
                     gradient: UnsafeMutablePointer<Float>?) -> Double {
        let n = weights.count
        let d = options.divergence
        let invT = 1 / options.temperature
        let lossScale = options.lossScale
        let factor = gradientFactor(d)
        var rowLoss = [Double](repeating: 0, count: n)
        rowLoss.withUnsafeMutableBufferPointer { losses in
            Threads.parallelFor(n) { rows in
                // slot[j] = (position of j in the row's top-k) + 1, or 0 outside the top-k.
                var slot = [Int32](repeating: 0, count: v)
                var a = [Float](repeating: 0, count: k + 1)   // a_b per bucket, the tail last
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
                        var tailSum: Double = 0
                        for j in 0..<v where slot[j] == 0 { tailSum += Double(expf(s[j] * invT - m)) }

                        var loss: Double = 0, mean: Double = 0
                        for kk in 0..<k {
                            let id = Int(ids[r * k + kk])
                            let x = KDDivergences.term(d, logP: logProbs[r * k + kk], logQ: s[id] * invT - logZ)
                            loss += x.loss
                            mean += x.qa
                            a[kk] = x.a
                        }
                        // No student tail (k = V): the bucket is empty and contributes nothing.
                        if tailSum > 0 {
                            let logQTail = Float(log(tailSum)) + m - logZ
                            let pTail = max(tailMass[r], 0)
                            let logPTail: Float
                            if d == .reverseKL {
                                logPTail = logf(max(pTail, KDDivergences.tailFloor))
                            } else {
                                logPTail = pTail > 0 ? logf(pTail) : -.infinity
                            }
                            let x = KDDivergences.term(d, logP: logPTail, logQ: logQTail)
                            loss += x.loss
                            mean += x.qa
                            a[k] = x.a
                        }
                        losses[r] = Double(w) * loss

                        if let g = gradient {
                            let gr = g + r * v
                            let scale = Float(Double(w) / normalizer * lossScale) * invT * factor
                            let center = Float(mean)
                            for j in 0..<v {
                                let q = expf(s[j] * invT - logZ)
                                let sl = Int(slot[j])
                                gr[j] = q * (a[sl == 0 ? k : sl - 1] - center) * scale
                            }
                        }
                        for kk in 0..<k { slot[Int(ids[r * k + kk])] = 0 }
                    }
                }
            }
        }
        return rowLoss.reduce(0, +) / normalizer * lossScale
    }
}
