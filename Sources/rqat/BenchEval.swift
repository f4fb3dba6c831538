import ArgumentParser
import Bench
import Eval
import Foundation
import Reasoning

struct BenchEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Generation rate of `rqat eval` (batched, sampled, sequences stopping on their own) against batch-1 greedy decode.",
        discussion: """
            Each of --repeats rounds times one batch-1 greedy decode (as `rqat bench decode`) and one \
            whole eval of the first --problems GSM8K problems, once per seed of --seeds (prefill, \
            sampling, answer checking), in alternating order; the ratio is of the medians. \
            `--problems 100 --seeds 42,43,44` is the eval of configs/smollm2-gsm.json.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.")
    var model = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "GSM8K problems per eval.")
    var problems = 64
    @Option(help: "Sampling seeds, comma-separated: each problem is answered once per seed.")
    var seeds = "42"
    @Option(help: "Sequences generated at once.")
    var batch = 32
    @Option(help: "Maximum new tokens per answer.")
    var maxTokens = 256
    @Option(help: "Sampling temperature.")
    var temperature: Float = 0.6
    @Option(help: "Nucleus mass.")
    var topP: Float = 0.95
    @Option(help: "Rounds.")
    var repeats = 3
    @OptionGroup var assets: AssetOptions
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let task = try TaskRegistry.task(named: "gsm8k-100", assets: assets.url)
            let bench = try EvalBench(model: model, problems: try task.problems(split: .test, count: problems, seed: 0))
            var options = EvalBench.Options()
            options.problems = problems
            options.settings = AccuracySettings(seeds: try parseSeeds(seeds), temperature: temperature, topP: topP, maxTokens: maxTokens, batch: batch)
            options.repeats = repeats
            let r = bench.run(options)
            output.emit(r, text: String(format: "eval     batch %d, %d problems x %d seeds, temperature %.2g, top-p %.2g: %.1f [%.1f-%.1f] tokens/s (%.0f tokens per answer)\ndecode   batch 1 greedy: %.1f tokens/s\nratio    %.2fx (per round %.2f-%.2fx), %d rounds, %d threads",
                                        r.batch, r.problems, r.seeds.split(separator: ",").count, r.temperature, r.topP, r.evalTokensPerS, r.evalTokensPerSMin, r.evalTokensPerSMax,
                                        r.meanCompletionTokens, r.decodeBatch1TokensPerS, r.ratio, r.ratioPerRoundMin, r.ratioPerRoundMax, r.repeats, r.threads))
        }
    }
}
