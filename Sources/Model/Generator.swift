import Tensors

package struct GenerationRequest: Sendable {
    package var prompt: [Int]
    package var maxNewTokens: Int
    package var sampling: SamplingParams
    package init(prompt: [Int], maxNewTokens: Int, sampling: SamplingParams = .greedy) {
        self.prompt = prompt
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
    }
}

package struct GenerationResult: Sendable {
    package enum Finish: String, Sendable, Codable { case eos, length }
    package var tokens: [Int]
    /// Log-probability of each generated token (see `Sampler`).
    package var logprobs: [Float]
    package var finish: Finish

    package init(tokens: [Int], logprobs: [Float], finish: Finish) {
        self.tokens = tokens
        self.logprobs = logprobs
        self.finish = finish
    }
}

/// Batched generation: all prompts are prefilled in one pass, then every running sequence
/// advances one token per step in a shared forward; a sequence leaves the batch at its own
/// stop token or length limit.
package final class Generator {
    package let decoder: Decoder
    package let stopTokens: Set<Int>

    package init(decoder: Decoder, stopTokens: Set<Int>) {
        self.decoder = decoder
        self.stopTokens = stopTokens
    }

    /// `onToken(request index, token)` is called as each token is chosen (for streaming).
    package func generate(_ requests: [GenerationRequest],
                         onToken: ((Int, Int) -> Void)? = nil) -> [GenerationResult] {
        precondition(requests.allSatisfy { !$0.prompt.isEmpty }, "every prompt needs at least one token")
        let cache = decoder.makeCache(capacities: requests.map { $0.prompt.count + $0.maxNewTokens })
        var samplers = requests.map { Sampler($0.sampling) }
        var results = requests.map { _ in GenerationResult(tokens: [], logprobs: [], finish: .length) }
        let v = decoder.config.vocabSize

        var active = requests.indices.filter { requests[$0].maxNewTokens > 0 }
        var logits = decoder.forward(active.map { SequenceChunk(sequence: $0, tokens: requests[$0].prompt) },
                                     cache: cache)
        while !active.isEmpty {
            var next: [Int] = []
            for (row, s) in active.enumerated() {
                let (token, logprob) = samplers[s].sample(logits.row(row), count: v)
                results[s].tokens.append(token)
                results[s].logprobs.append(logprob)
                onToken?(s, token)
                if stopTokens.contains(token) {
                    results[s].finish = .eos
                } else if results[s].tokens.count < requests[s].maxNewTokens {
                    next.append(s)
                }
            }
            active = next
            if active.isEmpty { break }
            logits = decoder.forward(active.map { SequenceChunk(sequence: $0, tokens: [results[$0].tokens.last!]) },
                                     cache: cache)
        }
        return results
    }
}
