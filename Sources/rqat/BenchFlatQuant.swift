import ArgumentParser
import Bench
import Formats
import Foundation
import Model
import Quant

struct BenchFlatQuant: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flatquant",
        abstract: "FlatQuant's block calibration on a model's first blocks: output MSE at the start and after, and seconds per block.",
        discussion: """
            The CPU default of `rqat ptq --method flatquant` is 32 windows x 512 tokens, 5 epochs; FlatQuant's \
            published settings are 128 x 2048, 15 epochs. Each block trains on full-precision inputs, so the \
            first blocks' figures are those a whole calibration would give them.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.")
    var model = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "Calibration text (lines, or JSONL with \"text\").") var calib: String
    @Option(help: "Scheme.") var scheme = "w4a4kv4"
    @Option(help: "Blocks to calibrate, from the first.") var blocks = 2
    @Option(help: "Train from this block on; the blocks before it only carry the full-precision inputs forward.") var fromBlock = 0
    @Option(help: "Calibration windows.") var samples = FlatQuant.Settings.cpuDefault.samples
    @Option(help: "Tokens per window.") var length = FlatQuant.Settings.cpuDefault.length
    @Option(help: "Epochs.") var epochs = FlatQuant.Settings.cpuDefault.epochs
    @Option(help: "Learning rate (the clip ratios' is 10x).") var lr = FlatQuant.Settings.cpuDefault.learningRate
    @Option(help: "Where the Kronecker factors start, \(FlatQuantTransform.Start.choices).") var factorStart = FlatQuant.Settings.cpuDefault.factorStart
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let parsed: QuantScheme
            do { parsed = try QuantScheme.parse(scheme) } catch { throw CLIError("\(error)") }
            var settings = FlatQuant.Settings.cpuDefault
            settings.samples = samples
            settings.length = length
            settings.epochs = epochs
            settings.learningRate = lr
            settings.blocks = blocks
            settings.firstBlock = fromBlock
            settings.factorStart = factorStart
            for r in try FlatQuantBench.run(model: model, calibration: calib, scheme: parsed, settings: settings, log: printErr) {
                output.emit(r, text: String(format: "block %d: %d windows x %d tokens, %d epochs (%d steps): output MSE %.4g -> %.4g%@ in %.1f s",
                                            r.block, r.windows, r.length, r.epochs, r.steps, r.mseStart, r.mseAfter,
                                            r.keptStart ? " (start kept)" : "", r.seconds))
            }
        }
    }
}
