import Foundation
import Tensors
import Train

/// How far the KD loss a student computes from a wire signal (top-k + tail, sampled draws,
/// bf16 logits) is from the exact full-vocabulary divergence (`options.divergence`: forward KL,
/// or reverse KL / JSD, whose top-k + tail losses are bucketed approximations), and how far its
/// gradient w.r.t. the student logits is from the exact one: sums over rows that `summary` turns
/// into the `kd_bias` figures of `rqat bench wire`.
package struct KDBias: Equatable, Sendable {
    /// Sums over rows of the estimate and of the exact KL (nats), and of their squared difference.
    package var estimate = 0.0, reference = 0.0, diffSquares = 0.0
    /// Per-row estimate - exact KL, in the order the rows came.
    package var diffs: [Double] = []
    /// Over all rows at once: gradient . exact gradient, |gradient|^2, |exact gradient|^2.
    package var dot = 0.0, normSquared = 0.0, referenceNormSquared = 0.0
    /// Sum of the per-row gradient cosines (rows where both gradients are non-zero), and rows seen.
    package var rowCosineSum = 0.0, rows = 0
    /// top-k: the teacher's mass outside the top-k; sampled: distinct ids drawn; summed over rows.
    package var tailMass = 0.0, distinctIds = 0

    package init() {}

    /// The exact side for `rows` positions: each row's full-vocabulary divergence (`kl`: forward
    /// KL(teacher || student) unless `options.divergence` says otherwise) and the teacher's
    /// entropy at the temperature of `options`, and the full-logit gradient of the mean loss
    /// w.r.t. the student logits, (rows, vocab).
    package static func reference(student: Tensor, teacher: Tensor, vocab v: Int, rows n: Int,
                                  options: KDLoss.Options) -> (kl: [Double], entropy: [Double], gradient: Tensor) {
        let invT = 1 / options.temperature
        var kl = [Double](repeating: 0, count: n), entropy = [Double](repeating: 0, count: n)
        for r in 0..<n {
            kl[r] = KDLoss.fullLogits(student: student.row(r), vocab: v, teacher: teacher.row(r),
                                      weights: [1], normalizer: 1, options: options, gradient: nil)
            entropy[r] = Self.entropy(teacher.row(r), v, invT: invT)
        }
        let ones = [Float](repeating: 1, count: n)
        let gradient = Tensor(shape: [n, v])
        gradient.ptr.update(from: student.ptr, count: n * v)
        _ = KDLoss.fullLogits(student: gradient.ptr, vocab: v, teacher: teacher.ptr, weights: ones,
                              normalizer: Double(n), options: options, gradient: gradient.ptr)
        return (kl, entropy, gradient)
    }

    /// Entropy of softmax(x / T) in nats (`invT` = 1 / T).
    package static func entropy(_ x: UnsafePointer<Float>, _ v: Int, invT: Float) -> Double {
        var m = -Float.infinity
        for j in 0..<v { m = max(m, x[j] * invT) }
        var z = 0.0, s = 0.0
        for j in 0..<v {
            let a = Double(x[j] * invT - m)
            let e = exp(a)
            z += e
            s += e * a
        }
        return log(z) - s / z
    }

    /// Adds `signal`'s rows: each row's estimate against the exact KL (`reference`, from
    /// `reference(...)`; for sampled signals the estimate is the cross-entropy on the draws,
    /// so the teacher's entropy is subtracted), and its gradient against `referenceGradient`.
    package mutating func add(signal: TeacherSignal, student: Tensor, vocab v: Int, rows n: Int,
                              reference: [Double], entropy: [Double], referenceGradient: Tensor, options: KDLoss.Options) {
        switch signal {
        case .topK(_, _, _, let tail): tailMass += tail.reduce(0) { $0 + Double($1) }
        case .sampled(_, _, let counts): distinctIds += counts.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
        case .full: break
        }
        for r in 0..<n {
            var rowEstimate = Self.row(r, of: signal).kdLoss(student: student.row(r), vocab: v, weights: [1], normalizer: 1,
                                                             options: options, gradient: false)
            if case .sampled = signal { rowEstimate -= entropy[r] }
            estimate += rowEstimate
            self.reference += reference[r]
            let d = rowEstimate - reference[r]
            diffs.append(d)
            diffSquares += d * d
        }
        let gradient = Tensor(shape: [n, v])
        gradient.ptr.update(from: student.ptr, count: n * v)
        _ = signal.kdLoss(student: gradient.ptr, vocab: v, weights: [Float](repeating: 1, count: n), normalizer: Double(n),
                          options: options, gradient: true)
        for r in 0..<n {
            let g = gradient.row(r), f = referenceGradient.row(r)
            var rowDot = 0.0, gg = 0.0, ff = 0.0
            for j in 0..<v { rowDot += Double(g[j]) * Double(f[j]); gg += Double(g[j]) * Double(g[j]); ff += Double(f[j]) * Double(f[j]) }
            dot += rowDot
            normSquared += gg
            referenceNormSquared += ff
            if gg > 0 && ff > 0 { rowCosineSum += rowDot / (gg * ff).squareRoot() }
            rows += 1
        }
    }

    /// Row r of a signal as a one-row signal.
    package static func row(_ r: Int, of signal: TeacherSignal) -> TeacherSignal {
        switch signal {
        case .full(let logits, let v):
            return .full(logits: Array(logits[r * v..<(r + 1) * v]), vocab: v)
        case .topK(let k, let ids, let logProbs, let tail):
            return .topK(k: k, ids: Array(ids[r * k..<(r + 1) * k]), logProbs: Array(logProbs[r * k..<(r + 1) * k]), tailMass: [tail[r]])
        case .sampled(let m, let ids, let counts):
            return .sampled(draws: m, ids: Array(ids[r * m..<(r + 1) * m]), counts: Array(counts[r * m..<(r + 1) * m]))
        }
    }

    /// The figures of the sums so far.
    package struct Summary: Codable, Equatable, Sendable {
        package var positions: Int
        /// Mean estimate and mean exact KL per position (nats).
        package var estimate: Double, reference: Double
        /// Mean difference per position (nats), and the relative bias (Σ estimate - Σ KL) / Σ KL
        /// with its standard error over positions.
        package var biasNats: Double, bias: Double, biasSE: Double
        /// Cosine of the two gradients over all positions at once, and the mean per-row cosine.
        package var gradCosine: Double, gradCosineRowMean: Double
        /// Per position: the teacher mass outside the top-k, and the distinct ids of sampled draws.
        package var tailMass: Double, distinctIds: Double
    }

    package var summary: Summary {
        let n = Double(diffs.count)
        let meanDiff = (estimate - reference) / n
        let sd = ((diffSquares / n - meanDiff * meanDiff) * n / max(n - 1, 1)).squareRoot()
        return Summary(positions: diffs.count, estimate: estimate / n, reference: reference / n, biasNats: meanDiff,
                       bias: (estimate - reference) / reference, biasSE: sd * n.squareRoot() / reference,
                       gradCosine: dot / (normSquared * referenceNormSquared).squareRoot(),
                       gradCosineRowMean: rowCosineSum / Double(max(rows, 1)),
                       tailMass: tailMass / n, distinctIds: Double(distinctIds) / n)
    }
}
