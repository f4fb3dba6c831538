import Eval
import Formats
import Foundation
import Model
import Reasoning
import Tensors

/// `rqat bench eval`: the generation rate of `rqat eval` (batched, sampled, every sequence
/// stopping on its own, answers checked) against batch-1 greedy decode of the same model,
/// measured in alternating rounds of one process so that the machine's drift cancels.
package struct EvalBench {
    package struct Options: Sendable {
        package var problems = 64
        package var settings = AccuracySettings(seeds: [42], maxTokens: 256, batch: 32)
        package var decodeTokens = 64
        package var repeats = 3
        package init() {}
    }

    package struct Record: BenchRecord, Equatable {
        package static let name = "eval_speed"
        package var problems: Int
        /// Each problem is answered once per seed: the seeds, comma-separated (records are flat).
        package var seeds: String
        package var batch: Int
        package var temperature: Float
        package var topP: Float
        package var maxTokens: Int
        /// Generated tokens per second of wall time of a whole eval (prefill, sampling, checking).
        package var evalTokensPerS: Double
        package var evalTokensPerSMin: Double
        package var evalTokensPerSMax: Double
        package var decodeBatch1TokensPerS: Double
        package var ratio: Double
        package var ratioPerRoundMin: Double
        package var ratioPerRoundMax: Double
        package var meanCompletionTokens: Double
        package var repeats: Int
        package var threads: Int

        enum CodingKeys: String, CodingKey {
            case problems, seeds, batch, temperature, repeats, threads, ratio
            case topP = "top_p", maxTokens = "max_tokens"
            case evalTokensPerS = "eval_tokens_per_s", evalTokensPerSMin = "eval_tokens_per_s_min", evalTokensPerSMax = "eval_tokens_per_s_max"
            case decodeBatch1TokensPerS = "decode_batch1_tokens_per_s"
            case ratioPerRoundMin = "ratio_per_round_min", ratioPerRoundMax = "ratio_per_round_max"
            case meanCompletionTokens = "mean_completion_tokens"
        }
    }

    package let model: LanguageModel
    package let problems: [Problem]

    package init(model path: String, problems: [Problem]) throws {
        model = try LanguageModel(checkpoint: try Checkpoint.open(path))
        self.problems = problems
    }

    package func run(_ options: Options) -> Record {
        let prompted = PromptedModel(model)
        let chosen = Array(problems.prefix(options.problems))
        let decodePrompt = model.tokenizer.encode("The capital of France is")
        var evalRates: [Double] = [], decodeRates: [Double] = [], ratios: [Double] = [], lengths: [Double] = []
        for round in 0..<options.repeats {
            var evalRate = 0.0, decodeRate = 0.0
            let measureEval = {
                var outcomes: [ProblemOutcome] = []
                let t = seconds { outcomes = AccuracyEval.run(problems: chosen, settings: options.settings, model: prompted) }
                let tokens = outcomes.reduce(0) { $0 + $1.tokens }
                evalRate = Double(tokens) / t
                lengths.append(Double(tokens) / Double(max(outcomes.count, 1)))
            }
            let measureDecode = { decodeRate = DecodeBench.decodeRate(model.decoder, prompt: decodePrompt, batch: 1, steps: options.decodeTokens) }
            if round % 2 == 0 { measureDecode(); measureEval() } else { measureEval(); measureDecode() }
            evalRates.append(evalRate)
            decodeRates.append(decodeRate)
            ratios.append(evalRate / decodeRate)
        }
        let e = Spread(evalRates), d = Spread(decodeRates), r = Spread(ratios)
        return Record(problems: chosen.count, seeds: options.settings.runSeeds.map(String.init).joined(separator: ","), batch: options.settings.batch, temperature: options.settings.temperature,
                      topP: options.settings.topP, maxTokens: options.settings.maxTokens, evalTokensPerS: e.median,
                      evalTokensPerSMin: e.min, evalTokensPerSMax: e.max, decodeBatch1TokensPerS: d.median,
                      ratio: e.median / d.median, ratioPerRoundMin: r.min, ratioPerRoundMax: r.max,
                      meanCompletionTokens: lengths.reduce(0, +) / Double(max(lengths.count, 1)),
                      repeats: options.repeats, threads: Threads.count)
    }
}
