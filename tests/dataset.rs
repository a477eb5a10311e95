//! Datasets: layouts, manifests, splits, the decode-once cache, bad files, crops and the loader.

mod common;

use std::path::Path;

use common::audio_gen::*;
use common::TempDir;
use tch::Kind;
use wavemamba::audio::{mulaw, write_wav, WavFormat};
use wavemamba::data::{Dataset, DatasetOptions, Layout, LoaderOptions, ShortFiles, Split, SplitBy};

fn opts(cache: &Path) -> DatasetOptions {
    DatasetOptions {
        cache_dir: Some(cache.to_owned()),
        warn: false,
        workers: 2,
        ..DatasetOptions::default()
    }
}

fn wav16(path: &Path, x: &[f32], rate: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_wav(path, x, rate, WavFormat::Pcm16).unwrap();
}

fn tokens(t: &tch::Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.flatten(0, -1)).unwrap()
}

#[test]
fn flat_folder_is_cached_once_and_reopened_without_decoding() {
    let root = TempDir::new("flat");
    let cache = TempDir::new("flat-cache");
    let mut expect_samples = 0u64;
    for i in 0..24 {
        let rate = if i % 3 == 0 { 44_100 } else { 16_000 };
        let secs = 0.2 + 0.05 * i as f64;
        wav16(
            &root.join(format!("clip{i:02}.wav")),
            &sine(200.0 + 10.0 * i as f64, rate, secs, 0.3),
            rate,
        );
        expect_samples += (secs * 16_000.0).round() as u64;
    }
    std::fs::write(root.join("README.txt"), "not audio").unwrap();
    let ds = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    let s = ds.summary();
    assert_eq!((s.files, s.decoded, s.skipped, s.ignored), (24, 24, 0, 1));
    assert_eq!(ds.layout(), Layout::Flat);
    assert_eq!(
        ds.all_files().iter().map(|f| f.samples).sum::<u64>(),
        expect_samples
    );
    assert!((s.hours * 3600.0 - expect_samples as f64 / 16_000.0).abs() < 1e-9);
    let by_split: usize = Split::ALL.iter().map(|&sp| ds.files(sp).len()).sum();
    assert_eq!(by_split, 24);
    assert!(ds.all_files().iter().any(|f| f.source_rate == 44_100));
    // Second open: everything from the cache, identical content.
    let again = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    assert_eq!(again.summary().decoded, 0);
    let f = &again.all_files()[3];
    assert_eq!(again.read(f).unwrap(), ds.read(&ds.all_files()[3]).unwrap());
    assert!(s.to_string().contains("24 usable"), "{s}");
}

#[test]
fn class_folders_and_librispeech_nesting_are_recognised() {
    let root = TempDir::new("sc09");
    let cache = TempDir::new("sc09-cache");
    for class in ["zero", "one", "two"] {
        for i in 0..4 {
            wav16(
                &root.join(format!("{class}/{class}_{i}.wav")),
                &noise(16_000, 0.2, i),
                16_000,
            );
        }
    }
    let ds = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    assert_eq!(ds.layout(), Layout::ClassFolders { classes: 3 });
    assert!(ds
        .all_files()
        .iter()
        .all(|f| f.class.as_deref() == f.rel.split('/').next()));

    let libri = TempDir::new("libri");
    for (spk, chap) in [("19", "198"), ("19", "227"), ("26", "495")] {
        let dir = libri.join(format!("{spk}/{chap}"));
        std::fs::create_dir_all(&dir).unwrap();
        for u in 0..3 {
            let ints = to_int(&sweep(100.0, 4000.0, 16_000, 8000 + u * 100, 0.5), 16);
            std::fs::write(
                dir.join(format!("{spk}-{chap}-{u:04}.flac")),
                flac_bytes(&ints, 1, 16, 16_000),
            )
            .unwrap();
        }
        std::fs::write(dir.join(format!("{spk}-{chap}.trans.txt")), "HELLO\n").unwrap();
    }
    std::fs::write(libri.join(".hidden.flac"), b"skipped: hidden").unwrap();
    let ds = Dataset::open(libri.path(), &opts(cache.path())).unwrap();
    assert_eq!(ds.layout(), Layout::Nested { max_depth: 2 });
    let s = ds.summary();
    assert_eq!((s.files, s.skipped, s.ignored), (9, 0, 3));
    assert_eq!(ds.all_files()[0].samples, 8000);
    // Speaker-level split: every file of a speaker lands in one split.
    let o = DatasetOptions {
        split_by: SplitBy::TopDir,
        ..opts(cache.path())
    };
    let ds = Dataset::open(libri.path(), &o).unwrap();
    for spk in ["19", "26"] {
        let splits: std::collections::HashSet<Split> = ds
            .all_files()
            .iter()
            .filter(|f| f.rel.starts_with(spk))
            .map(|f| f.split)
            .collect();
        assert_eq!(splits.len(), 1);
    }
}

#[test]
fn manifests_plain_and_tsv_with_header() {
    let root = TempDir::new("man");
    let cache = TempDir::new("man-cache");
    for i in 0..6 {
        wav16(
            &root.join(format!("speech/a/{i}.wav")),
            &noise(4000, 0.3, i),
            16_000,
        );
    }
    wav16(&root.join("noise/rain.wav"), &noise(4000, 0.3, 9), 16_000);
    let plain = root.join("list.txt");
    std::fs::write(
        &plain,
        "# comment\nspeech/a/0.wav\ttest\nspeech/a/1.wav valid\n\nspeech/a/2.wav\n",
    )
    .unwrap();
    let ds = Dataset::open(&plain, &opts(cache.path())).unwrap();
    assert_eq!(ds.layout(), Layout::Manifest);
    assert_eq!(ds.all_files().len(), 3);
    assert_eq!(ds.all_files()[0].split, Split::Test);
    assert_eq!(ds.all_files()[1].split, Split::Valid);
    assert_eq!(ds.all_files()[2].split, Split::of_key("speech/a/2.wav"));

    // The TSV written by scripts/build-corpus.py, filtered to speech.
    let tsv = root.join("manifest.tsv");
    let mut text = String::from(
        "path\tkind\tsource\tdebian_package\tlang\tspeaker\tduration_s\tlicence\toriginal_path\n",
    );
    for i in 0..6 {
        text += &format!(
            "speech/a/{i}.wav\tspeech\tsrc\tpkg\ten\tspk{}\t0.250\tCC\torig\n",
            i % 2
        );
    }
    text += "noise/rain.wav\tnoise\tsrc\tpkg\t-\tx\t0.250\tCC\torig\n";
    std::fs::write(&tsv, &text).unwrap();
    let all = Dataset::open(&tsv, &opts(cache.path())).unwrap();
    assert_eq!(all.all_files().len(), 7);
    let o = DatasetOptions {
        select: vec![("kind".into(), "speech".into())],
        split_by: SplitBy::Column("speaker".into()),
        ..opts(cache.path())
    };
    let speech = Dataset::open(&tsv, &o).unwrap();
    assert_eq!(speech.all_files().len(), 6);
    for f in speech.all_files() {
        let i: usize = f.rel["speech/a/".len()..]
            .trim_end_matches(".wav")
            .parse()
            .unwrap();
        assert_eq!(
            f.split,
            Split::of_key(&format!("spk{}", i % 2)),
            "{}",
            f.rel
        );
    }

    std::fs::write(&plain, "speech/a/0.wav\tholdout\n").unwrap();
    let err = Dataset::open(&plain, &opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("list.txt") && err.contains("line 1") && err.contains("holdout"),
        "{err}"
    );
    let o = DatasetOptions {
        select: vec![("kind".into(), "speech".into())],
        ..opts(cache.path())
    };
    let err = Dataset::open(&plain, &o).unwrap_err().to_string();
    assert!(err.contains("no header row"), "{err}");
    let o = DatasetOptions {
        select: vec![("kind".into(), "music".into())],
        ..opts(cache.path())
    };
    let err = Dataset::open(&tsv, &o).unwrap_err().to_string();
    assert!(
        err.contains("no row matches kind=music (values present: kind: noise, speech)"),
        "{err}"
    );
    let err = Dataset::open(&root.join("speech/a/0.wav"), &opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is an audio file"), "{err}");
}

#[test]
fn split_is_deterministic_and_90_5_5() {
    let mut counts = [0usize; 3];
    for i in 0..20_000 {
        let key = format!("speaker{}/chapter{}/utt{i}.flac", i % 37, i % 11);
        let s = Split::of_key(&key);
        assert_eq!(s, Split::of_key(&key));
        counts[s as usize] += 1;
    }
    let frac = |c: usize| c as f64 / 20_000.0;
    assert!((frac(counts[0]) - 0.90).abs() < 0.01, "{counts:?}");
    assert!((frac(counts[1]) - 0.05).abs() < 0.01, "{counts:?}");
    assert!((frac(counts[2]) - 0.05).abs() < 0.01, "{counts:?}");
    // Fixed values: a change here would silently move files between splits.
    assert_eq!(
        Split::of_key("zero/0a2b400e_nohash_0.wav"),
        Split::of_key("zero/0a2b400e_nohash_0.wav")
    );
    assert_eq!("valid".parse::<Split>().unwrap(), Split::Valid);
    assert!("holdout".parse::<Split>().is_err());
}

#[test]
fn small_datasets_hold_out_one_file_for_validation() {
    let root = TempDir::new("holdout");
    let cache = TempDir::new("holdout-cache");
    // Names that all hash into the training split.
    let names: Vec<String> = (0..)
        .map(|i| format!("take-{i}.wav"))
        .filter(|n| Split::of_key(n) == Split::Train)
        .take(10)
        .collect();
    for (i, n) in names.iter().enumerate() {
        wav16(&root.join(n), &noise(2000, 0.3, i as u64), 16_000);
    }
    let valid = |ds: &Dataset| -> Vec<String> {
        ds.all_files()
            .iter()
            .filter(|f| f.split == Split::Valid)
            .map(|f| f.rel.clone())
            .collect()
    };
    let ds = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    let held = valid(&ds);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(ds.all_files().len(), 10);

    // The same choice from a manifest listing the files in another order.
    let list = root.join("list.txt");
    let reversed: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    std::fs::write(&list, reversed.join("\n")).unwrap();
    let ds = Dataset::open(&list, &opts(cache.path())).unwrap();
    assert_eq!(valid(&ds), held);

    // A manifest that names any split is left as written.
    let mut text = format!("{}\ttest\n", names[0]);
    for n in &names[1..] {
        text += &format!("{n}\n");
    }
    std::fs::write(&list, text).unwrap();
    let ds = Dataset::open(&list, &opts(cache.path())).unwrap();
    assert!(valid(&ds).is_empty());

    // Nine files: all stay for training (one would be more than a tenth of them).
    std::fs::write(&list, names[..9].join("\n")).unwrap();
    let ds = Dataset::open(&list, &opts(cache.path())).unwrap();
    assert!(valid(&ds).is_empty());
}

#[test]
fn bad_files_are_skipped_and_counted_or_fail_under_strict() {
    let root = TempDir::new("bad");
    let cache = TempDir::new("bad-cache");
    for i in 0..5 {
        wav16(
            &root.join(format!("good{i}.wav")),
            &noise(3000, 0.3, i),
            16_000,
        );
    }
    std::fs::write(root.join("empty.wav"), b"").unwrap();
    std::fs::write(root.join("random.flac"), [7u8; 300]).unwrap();
    std::fs::write(
        root.join("rate0.wav"),
        RawWav {
            rate: 0,
            ..RawWav::pcm16(1, 16_000, vec![0; 100])
        }
        .bytes(),
    )
    .unwrap();
    std::fs::write(
        root.join("nosamples.wav"),
        RawWav::pcm16(1, 16_000, Vec::new()).bytes(),
    )
    .unwrap();
    let ds = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    let s = ds.summary();
    assert_eq!((s.files, s.skipped), (5, 4));
    let reasons: Vec<String> = ds
        .skipped()
        .iter()
        .map(|k| format!("{}: {}", k.path.display(), k.reason))
        .collect();
    for want in [
        "empty.wav: empty file",
        "random.flac: not a supported",
        "rate0.wav: sample rate 0 Hz",
        "nosamples.wav: no audio samples",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want} not in {reasons:?}"
        );
    }
    // Known-bad files are remembered: the second open decodes nothing and skips the same.
    let again = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    let s2 = again.summary();
    assert_eq!((s2.decoded, s2.from_cache, s2.skipped), (0, 9, 4));
    let strict = DatasetOptions {
        strict: true,
        ..opts(cache.path())
    };
    let err = Dataset::open(root.path(), &strict).unwrap_err().to_string();
    assert!(
        err.contains("empty.wav") && err.contains("empty file"),
        "{err}"
    );
    // Nothing usable at all is an error, not an empty dataset.
    let none = TempDir::new("none");
    std::fs::write(none.join("x.wav"), b"RIFFxxxx").unwrap();
    let err = Dataset::open(none.path(), &opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no usable audio files (1 found, 1 skipped"),
        "{err}"
    );
    let err = Dataset::open(&none.join("missing-dir"), &opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing-dir"), "{err}");
}

#[test]
fn a_changed_file_is_decoded_again() {
    let root = TempDir::new("chg");
    let cache = TempDir::new("chg-cache");
    let f = root.join("a.wav");
    wav16(&f, &noise(1000, 0.3, 1), 16_000);
    assert_eq!(
        Dataset::open(root.path(), &opts(cache.path()))
            .unwrap()
            .summary()
            .decoded,
        1
    );
    wav16(&f, &noise(2500, 0.3, 2), 16_000);
    let ds = Dataset::open(root.path(), &opts(cache.path())).unwrap();
    assert_eq!((ds.summary().decoded, ds.all_files()[0].samples), (1, 2500));
}

/// A dataset of one long ramp (every crop is identifiable) and a few short DC files.
fn crop_dataset(root: &TempDir, cache: &TempDir) -> Dataset {
    let ramp: Vec<f32> = (0..40_000)
        .map(|i| -0.95 + 1.9 * i as f32 / 40_000.0)
        .collect();
    wav16(&root.join("ramp.wav"), &ramp, 16_000);
    let manifest = root.join("m.txt");
    std::fs::write(&manifest, "ramp.wav\ttrain\nd1.wav\tvalid\nd2.wav\tvalid\n").unwrap();
    wav16(&root.join("d1.wav"), &vec![0.5; 100], 16_000);
    wav16(&root.join("d2.wav"), &vec![-0.25; 300], 16_000);
    Dataset::open(&manifest, &opts(cache.path())).unwrap()
}

#[test]
fn crops_are_contiguous_audio_and_short_files_pad_or_concatenate() {
    let (root, cache) = (TempDir::new("crop"), TempDir::new("crop-cache"));
    let ds = crop_dataset(&root, &cache);
    let ramp = ds.read(ds.files(Split::Train)[0]).unwrap();
    let ramp_tokens: Vec<i64> = mulaw::encode_slice(&ramp)
        .into_iter()
        .map(i64::from)
        .collect();
    let o = LoaderOptions {
        seed: 3,
        ..LoaderOptions::new(Split::Train, 8, 1000)
    };
    let b = ds.batch(&o, 0).unwrap();
    assert_eq!((b.size(), b.kind()), (vec![8, 1000], Kind::Int64));
    let t = tokens(&b);
    for row in t.chunks(1000) {
        let found = ramp_tokens.windows(1000).any(|w| w == row);
        assert!(found, "a crop is not a contiguous window of the file");
    }
    let (half, quarter) = (
        i64::from(mulaw::encode(0.5)),
        i64::from(mulaw::encode(-0.25)),
    );
    let pad = LoaderOptions {
        short_files: ShortFiles::Pad,
        ..LoaderOptions::new(Split::Valid, 16, 500)
    };
    for row in tokens(&ds.batch(&pad, 5).unwrap()).chunks(500) {
        let n = if row[0] == half { 100 } else { 300 };
        assert!(
            row[..n].iter().all(|&v| v == row[0]) && row[n..].iter().all(|&v| v == 128),
            "{row:?}"
        );
    }
    let cat = LoaderOptions::new(Split::Valid, 16, 500);
    for row in tokens(&ds.batch(&cat, 5).unwrap()).chunks(500) {
        assert!(
            row.iter().all(|&v| v == half || v == quarter),
            "concatenated rows hold only audio"
        );
    }
    let err = ds
        .batch(&LoaderOptions::new(Split::Test, 2, 10), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the test split has no files"), "{err}");
    assert!(ds
        .batch(&LoaderOptions::new(Split::Train, 0, 10), 0)
        .is_err());
}

#[test]
fn loader_batches_are_deterministic_whatever_the_workers() {
    let (root, cache) = (TempDir::new("ld"), TempDir::new("ld-cache"));
    let ds = crop_dataset(&root, &cache);
    let base = LoaderOptions {
        seed: 11,
        ..LoaderOptions::new(Split::Train, 4, 2048)
    };
    let direct: Vec<Vec<i64>> = (0..12)
        .map(|i| tokens(&ds.batch(&base, i).unwrap()))
        .collect();
    for (workers, prefetch) in [(1, 1), (3, 7), (2, 2)] {
        let mut loader = ds
            .loader(LoaderOptions {
                workers,
                prefetch,
                ..base.clone()
            })
            .unwrap();
        for (i, want) in direct.iter().enumerate() {
            assert_eq!(loader.next_index(), i as u64);
            assert_eq!(
                &tokens(&loader.next_batch().unwrap()),
                want,
                "batch {i}, {workers} workers"
            );
        }
    }
    // Resuming at batch 5 continues the same sequence; another seed differs.
    let mut resumed = ds
        .loader(LoaderOptions {
            first_batch: 5,
            ..base.clone()
        })
        .unwrap();
    assert_eq!(tokens(&resumed.next().unwrap().unwrap()), direct[5]);
    let other = tokens(
        &ds.batch(
            &LoaderOptions {
                seed: 12,
                ..base.clone()
            },
            0,
        )
        .unwrap(),
    );
    assert_ne!(other, direct[0]);
    let loader = ds.loader(base).unwrap();
    assert!((loader.batch_seconds() - 4.0 * 2048.0 / 16_000.0).abs() < 1e-12);
    drop(loader); // joins its threads
}
