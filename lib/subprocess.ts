// multiproc/subprocess: Python's subprocess.run / Popen over child_process.
export {};
