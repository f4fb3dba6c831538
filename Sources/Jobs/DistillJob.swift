import Cluster
import Foundation
import Formats
import Model
import Tensors
import Train

/// Knowledge distillation (`rqat train`): under mpirun, world ranks 0..<teachers serve the
/// teacher and the others are data-parallel students; in one process (or with no teacher
/// ranks) every student runs its teacher in-process. Every rank ends by writing its
/// `TrainSummary` to OUT/summary-rank<N>.json.
package struct DistillJob {
    /// What the student minimises: a divergence to the teacher (`KDDivergence`), or plain
    /// cross-entropy on the data (`ce`; the teacher's signal is not used).
    package enum Loss: String, CaseIterable, Sendable {
        case forwardKL = "kd-fkl", reverseKL = "kd-rkl", jsd = "kd-jsd", ce

        /// Forward KL under its name from before the other divergences (`--loss kd`).
        package static let kd = Loss.forwardKL

        /// A `--loss` value: a raw value, or `kd` for forward KL.
        package init?(name: String) {
            self.init(rawValue: name == "kd" ? Loss.forwardKL.rawValue : name)
        }

        package static let validNames = "kd-fkl (alias kd), kd-rkl, kd-jsd, ce"

        /// The divergence of a KD loss, nil for `ce`.
        package func divergence(jsdBeta: Float) -> KDDivergence? {
            switch self {
            case .forwardKL: return .forwardKL
            case .reverseKL: return .reverseKL
            case .jsd: return .jsd(beta: jsdBeta)
            case .ce: return nil
            }
        }

        /// Why this loss cannot run on `encoding` (reverse KL and JSD need teacher probabilities),
        /// nil if it can.
        package func problem(with encoding: SignalEncoding, jsdBeta: Float) -> String? {
            if self == .jsd && !(jsdBeta > 0 && jsdBeta < 1) {
                return "--jsd-beta \(jsdBeta) is outside (0, 1), where the JSD is identically zero: pick e.g. 0.5"
            }
            guard case .sampled = encoding, let d = divergence(jsdBeta: jsdBeta), !d.acceptsSampledSignal else { return nil }
            return "--loss \(rawValue) needs the teacher's probabilities, which sampled draws (--signal \(encoding)) do not carry: use --signal full or top-K (e.g. top-64), or --loss kd-fkl"
        }
    }

    package var teacher: String
    package var student: String
    package var loss: Loss
    /// beta of `--loss kd-jsd`, in (0, 1).
    package var jsdBeta: Float
    /// The teacher signal on the wire; its temperature is the KD temperature.
    package var signal: SignalOptions
    /// World ranks that serve the teacher (0 = a teacher inside every student).
    package var teachers: Int
    package var lookahead: Int
    package var bucketMB: Double
    package var syncCheckEvery: Int
    package var spec: TrainingSpec

    package init(teacher: String, student: String, loss: Loss, signal: SignalOptions, teachers: Int, lookahead: Int,
                 bucketMB: Double, syncCheckEvery: Int, spec: TrainingSpec, jsdBeta: Float = 0.5) {
        self.teacher = teacher
        self.student = student
        self.loss = loss
        self.jsdBeta = jsdBeta
        self.signal = signal
        self.teachers = teachers
        self.lookahead = lookahead
        self.bucketMB = bucketMB
        self.syncCheckEvery = syncCheckEvery
        self.spec = spec
    }

    /// This rank's part in the MPI world, with `runRanks`' exit statuses.
    package func runInWorld(printLine: @escaping (String) -> Void) -> Int32 {
        runRanks(teachers: teachers, printLine: printLine) { roles in _ = try run(roles: roles, printLine: printLine) }
    }

    /// This rank's part of the job. Progress lines come from student 0 (the rank that writes
    /// checkpoints) and, once each, from every teacher rank.
    package func run(roles: Roles, printLine: @escaping (String) -> Void) throws -> TrainSummary {
        let world = roles.world
        let isLead = world.rank == roles.teachers
        let log: (String) -> Void = { if isLead { printLine("train: " + $0) } }
        if let problem = loss.problem(with: signal.encoding, jsdBeta: jsdBeta) { throw JobError(problem) }
        log(try roles.layoutLine(threads: Threads.count))

        // Teacher and student must share one vocabulary: compared on every rank before any work.
        var teacherModel: LanguageModel?
        if roles.role == .teacher || !roles.remoteTeachers { teacherModel = try LanguageModel(path: teacher) }
        let studentSetup = roles.role == .student ? try StudentSetup(model: student, spec: spec, log: log) : nil
        try checkVocabularies(world: world, teacher: teacherModel?.tokenizer, student: studentSetup?.tokenizer)

        var summary = TrainSummary(rank: world.rank, worldSize: world.size, role: roles.role.rawValue, roleIndex: roles.group.rank)
        if roles.role == .teacher {
            let service = TeacherService(decoder: teacherModel!.decoder, options: signal, stopTokens: teacherModel!.stopTokens)
            let start = Date()
            try service.serve(world: world, students: roles.students)
            let seconds = Date().timeIntervalSince(start)
            printLine(String(format: "train: teacher rank %d served %d tokens in %.3f s busy of %.3f s (%.0f tok/s while busy)",
                             world.rank, service.tokensProcessed, service.busySeconds, seconds,
                             Double(service.tokensProcessed) / max(service.busySeconds, 1e-9)))
            summary.teacher = .init(tokens: service.tokensProcessed, busySeconds: service.busySeconds, wallSeconds: seconds)
            keep(summary, roles: roles, printLine: printLine)
            return summary
        }

        let s = studentSetup!
        let group = roles.students > 1 ? StudentGroup(comm: roles.group, bucketBytes: Int(bucketMB * 1e6)) : nil
        let link: TeacherLink = roles.remoteTeachers
            ? RemoteTeacherLink(world: world, teacherRanks: roles.teacherRanks, studentIndex: roles.group.rank,
                                studentCount: roles.students, vocab: s.decoder.config.vocabSize, options: signal)
            : LocalTeacherLink(service: TeacherService(decoder: teacherModel!.decoder, options: signal))
        let objective: TrainingObjective
        if let divergence = loss.divergence(jsdBeta: jsdBeta) {
            objective = KDObjective(link: link, lossOptions: KDLoss.Options(temperature: signal.temperature, divergence: divergence),
                                    lookahead: lookahead)
        } else {
            objective = CrossEntropyObjective()
        }
        let trainer = try Trainer(model: s.decoder, dataset: s.dataset, padId: s.padId, options: spec.options,
                                  runDir: spec.runDir, quantizer: s.quantizer, objective: objective, group: group)
        trainer.syncCheckEvery = syncCheckEvery
        trainer.extraCheckpointFiles = try s.checkpointFiles(in: spec.runDir, write: isLead)
        let start = Date()
        try s.train(trainer, log: log)
        let seconds = Date().timeIntervalSince(start)
        if loss != .ce {
            log(String(format: "student waited %.3f s for the teacher of %.3f s (%.1f%%); %d bytes of teacher signal received",
                       link.waitSeconds, seconds, 100 * link.waitSeconds / max(seconds, 1e-9), link.bytesReceived))
        }
        try link.close()   // remote teachers stop once every student has closed
        if let group {
            log(String(format: "gradient allreduce: %.3f MB per rank, %.3f s waiting after backward",
                       Double(group.bytesReduced) / 1e6, group.reduceWaitSeconds))
        }
        summary.student = .init(trainSeconds: seconds, teacherWaitSeconds: link.waitSeconds, signalBytes: link.bytesReceived,
                                allreduceMB: group.map { Double($0.bytesReduced) / 1e6 }, allreduceWaitSeconds: group?.reduceWaitSeconds)
        keep(summary, roles: roles, printLine: printLine)
        return summary
    }

    /// The run's work is done by now (checkpoints are written), so a summary that cannot be
    /// written is said, not turned into a failure of the whole job.
    private func keep(_ summary: TrainSummary, roles: Roles, printLine: (String) -> Void) {
        do {
            try summary.write(runDir: spec.runDir)
        } catch {
            printLine("warning: rank \(summary.rank) (\(roles.describe(rank: summary.rank))): no summary written: \(error); the run itself is complete")
        }
    }

    private func checkVocabularies(world: Communicator, teacher teacherTokenizer: BPETokenizer?, student studentTokenizer: BPETokenizer?) throws {
        func entry(_ t: BPETokenizer?) -> String { t.map { "\($0.vocabSize):\($0.vocabularyFingerprint)" } ?? "-" }
        let mine = entry(teacherTokenizer) + " " + entry(studentTokenizer)
        let all = try world.allGather(Array(mine.utf8)).map { String(decoding: $0, as: UTF8.self).split(separator: " ").map(String.init) }
        let teachers = Set(all.map { $0[0] }.filter { $0 != "-" }), students = Set(all.map { $0[1] }.filter { $0 != "-" })
        if teachers.union(students).count > 1 {
            throw JobError("the teacher \(teacher) and the student \(student) have different vocabularies (size:fingerprint teacher \(teachers.sorted()), student \(students.sorted())); KD needs the same tokenizer: pick a student of the teacher's family")
        }
    }
}
