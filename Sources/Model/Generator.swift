import Tensors

public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var maxNewTokens: Int
    public var sampling: SamplingParams
    public init(prompt: [Int], maxNewTokens: Int, sampling: SamplingParams = .greedy) {
        self.prompt = prompt
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
    }
}

public struct GenerationResult: Sendable {
    public enum Finish: String, Sendable, Codable { case eos, length }
    public var tokens: [Int]
    /// Log-probability of each generated token (see `Sampler`).
    public var logprobs: [Float]
    public var finish: Finish

    public init(tokens: [Int], logprobs: [Float], finish: Finish) {
        self.tokens = tokens
        self.logprobs = logprobs
        self.finish = finish
    }
}

/// Batched generation: all prompts are prefilled in one pass, then every running sequence
/// advances one token per step in a shared forward; a sequence leaves the batch at its own
/// stop token or length limit.
public final class Generator {
    public let decoder: Decoder
    public let stopTokens: Set<Int>

    public init(decoder: Decoder, stopTokens: Set<Int>) {
        self.decoder = decoder
        self.stopTokens = stopTokens
    }

    /// `onToken(request index, token)` is called as each token is chosen (for streaming).
    public func generate(_ requests: [GenerationRequest],
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
