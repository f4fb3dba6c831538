import Model
import Tensors

/// Negative log-likelihood of sequences scored from their first token, as transformers does
/// with `labels = input_ids`: position t predicts token t+1, so a sequence of T tokens has
/// T-1 predictions; a one-token sequence has none.
package struct PerplexityResult: Sendable {
    package var totalNLL: Double
    package var predictedTokens: Int
    /// Per sequence: (mean NLL, predictions), i.e. transformers' `loss` for that sequence.
    package var perSequence: [(meanNLL: Double, tokens: Int)]

    /// exp of the token-weighted mean NLL over all sequences.
    package var perplexity: Double { predictedTokens > 0 ? _exp(totalNLL / Double(predictedTokens)) : .nan }
}

import Foundation
@inline(__always) private func _exp(_ x: Double) -> Double { Foundation.exp(x) }

extension Decoder {
    /// `positions[i]`, when given, are the positions of sequence i whose next token is scored
    /// (e.g. a trace's completion only); by default every position but the last.
    package func perplexity(of sequences: [[Int]], positions: [[Int]]? = nil) -> PerplexityResult {
        var result = PerplexityResult(totalNLL: 0, predictedTokens: 0, perSequence: [])
        let v = config.vocabSize
        for (i, tokens) in sequences.enumerated() {
            let scored = positions?[i] ?? Array(0..<max(tokens.count - 1, 0))
            guard !scored.isEmpty else { result.perSequence.append((.nan, 0)); continue }
            let cache = makeCache(capacities: [tokens.count])
            let chunk = [SequenceChunk(sequence: 0, tokens: tokens)]
            // Logits of the scored rows only (row r is scored[r]), or of every row.
            let logits = positions == nil ? forward(chunk, cache: cache, allLogits: true) : forward(chunk, cache: cache, logitRows: scored)
            var nll: Double = 0
            for (r, t) in scored.enumerated() {
                let row = logits.row(r)
                nll += Double(logSumExp(row, v, scale: 1) - row[tokens[t + 1]])
            }
            let n = scored.count
            result.totalNLL += nll
            result.predictedTokens += n
            result.perSequence.append((nll / Double(n), n))
        }
        return result
    }
}
