import CKernels
import Foundation
import Tensors

/// How the next token is chosen. Temperature 0 is greedy (argmax, lowest id on ties, as torch).
package struct SamplingParams: Sendable, Equatable, Codable {
    package var temperature: Float
    /// Keep the smallest set of most likely tokens whose probability reaches `topP` (1 = off).
    package var topP: Float
    /// Keep the `topK` most likely tokens (0 = off).
    package var topK: Int
    package var seed: UInt64

    package init(temperature: Float = 0, topP: Float = 1, topK: Int = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
    }

    package static let greedy = SamplingParams()
}

/// Draws tokens from logits. The reported log-probability is that of the chosen token under
/// softmax(logits / T) before top-k/top-p filtering (T = 1 when greedy): the quantity a
/// policy-gradient update needs.
package struct Sampler {
    package let params: SamplingParams
    private var rng: SeededRNG
    private var probs: [Float] = []
    private var order: [Int32] = []

    package init(_ params: SamplingParams) {
        self.params = params
        self.rng = SeededRNG(seed: params.seed)
    }

    package mutating func sample(_ logits: UnsafePointer<Float>, count v: Int) -> (token: Int, logprob: Float) {
        if params.temperature <= 0 {
            var best = 0
            for i in 1..<v where logits[i] > logits[best] { best = i }
            return (best, logits[best] - logSumExp(logits, v, scale: 1))
        }
        if probs.count != v { probs = [Float](repeating: 0, count: v) }
        let invT = 1 / params.temperature
        let logZ = probs.withUnsafeMutableBufferPointer { p -> Float in
            for i in 0..<v { p[i] = logits[i] * invT }
            return rqat_softmax(p.baseAddress!, v)
        }

        // Candidates in order of decreasing probability, cut by top-k then top-p. Only tokens with
        // p >= (1 - topP) / V can be in the nucleus: all the others together hold less than
        // 1 - topP, so the tokens above that bound already reach topP. Sorting just those keeps
        // sampling exact and cheap (a few hundred candidates instead of the whole vocabulary).
        var candidates: ArraySlice<Int32>
        if params.topK > 0 || params.topP < 1 {
            let bound: Float = params.topP < 1 ? (1 - params.topP) / Float(v) : 0
            order.removeAll(keepingCapacity: true)
            probs.withUnsafeBufferPointer { p in
                for i in 0..<v where p[i] >= bound { order.append(Int32(i)) }
                order.sort { p[Int($0)] > p[Int($1)] || (p[Int($0)] == p[Int($1)] && $0 < $1) }
            }
            var keep = params.topK > 0 ? min(params.topK, order.count) : order.count
            if params.topP < 1 {
                var cumulative: Float = 0
                for (i, t) in order.prefix(keep).enumerated() {
                    cumulative += probs[Int(t)]
                    if cumulative >= params.topP { keep = i + 1; break }
                }
            }
            candidates = order.prefix(keep)
        } else {
            candidates = []
        }

        let token: Int
        if candidates.isEmpty {
            token = draw(from: 0..<v, total: 1) { $0 }
        } else {
            let total = candidates.reduce(Float(0)) { $0 + probs[Int($1)] }
            token = draw(from: candidates.indices, total: total) { Int(candidates[$0]) }
        }
        return (token, logits[token] * invT - logZ)
    }

    /// Inverse-CDF draw over `range`, mapping each index to a token with `tokenAt`.
    private mutating func draw<R: Collection>(from range: R, total: Float, tokenAt: (R.Element) -> Int) -> Int {
        let u = rng.uniform() * total
        var cumulative: Float = 0
        var last = tokenAt(range.first!)
        for i in range {
            let t = tokenAt(i)
            cumulative += probs[t]
            last = t
            if u < cumulative { return t }
        }
        return last  // rounding left u just above the sum
    }
}

/// log(sum(exp(scale * x))) computed stably.
package func logSumExp(_ x: UnsafePointer<Float>, _ n: Int, scale: Float) -> Float {
    var m = -Float.infinity
    for i in 0..<n { m = max(m, scale * x[i]) }
    var s: Double = 0
    for i in 0..<n { s += Double(expf(scale * x[i] - m)) }
    return m + Float(Foundation.log(s))
}
