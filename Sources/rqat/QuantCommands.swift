import Formats
import ArgumentParser
import Foundation
import Jobs
import Model
import Quant

struct PTQCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptq",
        abstract: "Post-training quantization (RTN or GPTQ) of the decoder-block linear layers, saved in the GPTQ packed format.",
        discussion: """
            Calibration (--calib) is a text file (one sequence per line) or JSONL with a "text" field, e.g. \
            teacher traces from `rqat generate --prompts ... --out traces.jsonl`. Its tokens are \
            concatenated and cut into windows of --seq-len tokens; the first --calib-samples windows are \
            used. GPTQ needs calibration; RTN uses it only to report each layer's output error. \
            The output directory loads in every rqat command (and is laid out as GPTQ checkpoints are); \
            OUT/ptq-report.json lists every matrix's relative output error and their sum.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory.") var model: String
    @Option(help: "Scheme, e.g. w3g128, w4g128-sym, w4 (\(QuantScheme.validForms)).") var scheme: String
    @Option(help: "rtn, gptq, quarot (QuaRot's rotation) or flatquant (FlatQuant's learned transforms, calibrated on --calib); the last two then quantize the weights with --then.") var method = "gptq"
    @Option(help: "With --method quarot or flatquant: how the transformed weights are quantized, rtn or gptq (on the transformed inputs' Hessians).") var then = "rtn"
    @Option(help: "With --method flatquant: calibration epochs over the windows.") var epochs = FlatQuant.Settings.cpuDefault.epochs
    @Option(help: "With --method flatquant: calibration learning rate (the clip ratios' is 10x).") var lr = FlatQuant.Settings.cpuDefault.learningRate
    @Option(help: "With --method flatquant: where the transforms' Kronecker factors start, \(FlatQuantTransform.Start.choices) (FlatQuant's: orthogonal, random).") var factorStart = FlatQuant.Settings.cpuDefault.factorStart
    @Option(help: "Calibration data (text lines or JSONL with \"text\").") var calib: String?
    @Option(help: "Calibration windows to use.") var calibSamples = 128
    @Option(help: "Tokens per calibration window.") var seqLen = 2048
    @Flag(help: "MSE clip search for the group ranges (grid 100, max shrink 0.8, norm 2.4).") var clip = false
    @Flag(help: "GPTQ act-order: quantize columns by decreasing Hessian diagonal.") var actOrder = false
    @Option(help: "GPTQ dampening, as a fraction of the mean Hessian diagonal.") var damp: Double = 0.01
    @Option(help: "Output directory.") var out: String
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let parsed: QuantScheme
            do { parsed = try QuantScheme.parse(scheme) } catch { throw CLIError("\(error)") }
            let transform = PTQTransform(rawValue: method)
            guard let weights = PTQMethod(rawValue: transform != nil ? then : method) else {
                throw CLIError(transform != nil ? "--then must be rtn or gptq" : "--method must be rtn, gptq, quarot or flatquant")
            }
            var job = PTQJob(model: model, scheme: parsed, method: weights, calibration: calib, calibrationSamples: calibSamples,
                             seqLen: seqLen, clip: clip, actOrder: actOrder, damp: damp, out: out)
            job.transform = transform
            job.flatQuant.epochs = epochs
            job.flatQuant.learningRate = lr
            job.flatQuant.factorStart = factorStart
            _ = try job.run(log: printErr)
        }
    }
}

extension FlatQuantTransform.Start: ExpressibleByArgument {
    static var choices: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
