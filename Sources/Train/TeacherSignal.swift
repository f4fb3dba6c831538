import Foundation
import Tensors

/// How the teacher's distribution at each trained position crosses the wire.
package enum SignalEncoding: Equatable, Sendable, CustomStringConvertible {
    /// Every logit (V floats per position).
    case full
    /// The k most likely tokens' log-probabilities plus the remaining mass.
    case topK(Int)
    /// m tokens drawn from the teacher distribution, as distinct ids with counts.
    case sampled(Int)

    /// "full", "top-64", "sampled-16".
    package init?(_ text: String) {
        if text == "full" { self = .full; return }
        if text.hasPrefix("top-"), let k = Int(text.dropFirst(4)), k >= 1 { self = .topK(k); return }
        if text.hasPrefix("sampled-"), let m = Int(text.dropFirst(8)), m >= 1, m <= 255 { self = .sampled(m); return }
        return nil
    }

    package var description: String {
        switch self {
        case .full: return "full"
        case .topK(let k): return "top-\(k)"
        case .sampled(let m): return "sampled-\(m)"
        }
    }

    package static let validForms = "full, top-K (e.g. top-64), sampled-M (e.g. sampled-16, M <= 255)"
}

/// The teacher's signal for M trained positions (rows), in one of the three encodings.
/// Top-k log-probabilities and sampled draws are taken at the KD temperature; full logits are
/// raw (the loss applies the temperature).
package enum TeacherSignal: Equatable {
    case full(logits: [Float], vocab: Int)                                  // (M, V)
    case topK(k: Int, ids: [Int32], logProbs: [Float], tailMass: [Float])   // (M, k), (M, k), (M)
    /// ids (M, slots) distinct per row with counts (M, slots); unused slots have count 0.
    case sampled(draws: Int, ids: [Int32], counts: [UInt8])

    package var rows: Int {
        switch self {
        case .full(let logits, let vocab): return logits.count / vocab
        case .topK(let k, let ids, _, _): return ids.count / k
        case .sampled(let m, let ids, _): return ids.count / m
        }
    }

    // MARK: - Computing the signal from teacher logits

    /// The signal of `rows` logit rows (each `vocab` wide). `seed(row)` seeds the draws of a row,
    /// so a row gets the same draws whichever rank or batch shard computes it.
    package static func make(logits: UnsafePointer<Float>, rows: Int, vocab v: Int, encoding: SignalEncoding,
                            temperature: Float, seed: (Int) -> UInt64) -> TeacherSignal {
        switch encoding {
        case .full:
            return .full(logits: Array(UnsafeBufferPointer(start: logits, count: rows * v)), vocab: v)
        case .topK(let k):
            precondition(k <= v, "top-k with k = \(k) > vocabulary \(v)")
            var ids = [Int32](repeating: 0, count: rows * k)
            var logProbs = [Float](repeating: 0, count: rows * k)
            var tail = [Float](repeating: 0, count: rows)
            ids.withUnsafeMutableBufferPointer { ids in
                logProbs.withUnsafeMutableBufferPointer { lp in
                    tail.withUnsafeMutableBufferPointer { tail in
                        Threads.parallelFor(rows) { range in
                            var order = [Int32](repeating: 0, count: k)
                            for r in range {
                                let row = logits + r * v
                                topIndices(row, v, into: &order)
                                let (_, logZ) = RowLosses.logSumExp(row, v, invT: 1 / temperature)
                                var kept: Double = 0
                                for (slot, id) in order.enumerated() {
                                    let logP = row[Int(id)] / temperature - logZ
                                    ids[r * k + slot] = id
                                    lp[r * k + slot] = logP
                                    kept += Double(expf(logP))
                                }
                                tail[r] = Float(max(0, 1 - kept))
                            }
                        }
                    }
                }
            }
            return .topK(k: k, ids: ids, logProbs: logProbs, tailMass: tail)
        case .sampled(let m):
            var ids = [Int32](repeating: 0, count: rows * m)
            var counts = [UInt8](repeating: 0, count: rows * m)
            ids.withUnsafeMutableBufferPointer { ids in
                counts.withUnsafeMutableBufferPointer { counts in
                    Threads.parallelFor(rows) { range in
                        var cdf = [Double](repeating: 0, count: v)
                        for r in range {
                            let row = logits + r * v
                            let (_, logZ) = RowLosses.logSumExp(row, v, invT: 1 / temperature)
                            var total: Double = 0
                            for j in 0..<v { total += Double(expf(row[j] / temperature - logZ)); cdf[j] = total }
                            var rng = SeededRNG(seed: seed(r))
                            var drawn: [Int32: UInt8] = [:]
                            for _ in 0..<m {
                                let u = rng.uniformDouble() * total
                                // First index whose cumulative mass exceeds u.
                                var lo = 0, hi = v - 1
                                while lo < hi { let mid = (lo + hi) / 2; if cdf[mid] > u { hi = mid } else { lo = mid + 1 } }
                                drawn[Int32(lo), default: 0] += 1
                            }
                            for (slot, (id, count)) in drawn.sorted(by: { $0.key < $1.key }).enumerated() {
                                ids[r * m + slot] = id
                                counts[r * m + slot] = count
                            }
                        }
                    }
                }
            }
            return .sampled(draws: m, ids: ids, counts: counts)
        }
    }

    /// The k largest entries' indices, largest first (ties: lower index first).
    private static func topIndices(_ row: UnsafePointer<Float>, _ v: Int, into order: inout [Int32]) {
        let k = order.count
        // A sorted window of the best k so far; most entries fail the first comparison.
        var count = 0
        for j in 0..<v {
            let x = row[j]
            if count == k && x <= row[Int(order[k - 1])] { continue }
            var i = min(count, k - 1)
            while i > 0 && row[Int(order[i - 1])] < x { order[i] = order[i - 1]; i -= 1 }
            order[i] = Int32(j)
            count = min(count + 1, k)
        }
    }

    // MARK: - The KD loss it feeds

    /// KD loss of the student logits of these M positions (M, V) against this signal; the
    /// gradient overwrites `student` when `gradient` is true.
    package func kdLoss(student: UnsafeMutablePointer<Float>, vocab v: Int, weights: [Float], normalizer: Double,
                       options: KDLoss.Options, gradient: Bool) -> Double {
        precondition(weights.count == rows, "signal has \(rows) rows, weights \(weights.count)")
        let g = gradient ? student : nil
        switch self {
        case .full(let logits, let vocab):
            precondition(vocab == v, "teacher vocabulary \(vocab) differs from the student's \(v)")
            return logits.withUnsafeBufferPointer {
                KDLoss.fullLogits(student: student, vocab: v, teacher: $0.baseAddress!, weights: weights,
                                  normalizer: normalizer, options: options, gradient: g)
            }
        case .topK(let k, let ids, let logProbs, let tail):
            return KDLoss.topK(student: student, vocab: v, ids: ids, logProbs: logProbs, k: k, tailMass: tail,
                               weights: weights, normalizer: normalizer, options: options, gradient: g)
        case .sampled(let m, let ids, let counts):
            let draws = (0..<rows).map { r in
                (0..<m).compactMap { s -> (id: Int, count: Int)? in
                    counts[r * m + s] > 0 ? (Int(ids[r * m + s]), Int(counts[r * m + s])) : nil
                }
            }
            return KDLoss.sampled(student: student, vocab: v, draws: draws, weights: weights,
                                  normalizer: normalizer, options: options, gradient: g)
        }
    }
}
