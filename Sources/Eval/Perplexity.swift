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
    package func perplexity(of sequences: [[Int]]) -> PerplexityResult {
        var result = PerplexityResult(totalNLL: 0, predictedTokens: 0, perSequence: [])
        let v = config.vocabSize
        for tokens in sequences {
            guard tokens.count >= 2 else { result.perSequence.append((.nan, 0)); continue }
            let cache = makeCache(capacities: [tokens.count])
            let logits = forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: cache, allLogits: true)
            var nll: Double = 0
            for t in 0..<(tokens.count - 1) {
                let row = logits.row(t)
                nll += Double(logSumExp(row, v, scale: 1) - row[tokens[t + 1]])
            }
            let n = tokens.count - 1
            result.totalNLL += nll
            result.predictedTokens += n
            result.perSequence.append((nll / Double(n), n))
        }
        return result
    }
}
