@echo off
rem pobatch launcher for Windows. The logic lives in pobatch itself (pobatch start, pobatch run
rem --sign-in-if-needed, tested in Python); this file only sets up and hands over.
rem   Double-click             choose the orders file, answer two questions, and go; sign in when asked
rem   Drop a file on run.bat   the same, for that orders file
rem   run.bat demo             the demo batch end to end
rem   run.bat test             the test suite (installs the test tools the first time)
rem   run.bat run orders.xlsx --base-url https://yourcompany.coupahost.com   any pobatch command
setlocal EnableExtensions
rem pushd, not cd /d: from a network share (\\server\share\pobatch) pushd maps a drive letter, cd cannot.
pushd "%~dp0"
if not exist setup.cfg (
  echo pobatch cannot open its own folder %~dp0
  pause
  exit /b 2
)

set "PY=python"
where py >nul 2>nul && set "PY=py -3"
set "POBATCH=.venv\Scripts\pobatch.exe"
set "STAMP=.venv\pobatch-setup.cfg"
set "TEST_STAMP=.venv\pobatch-test-setup.cfg"

rem Set up again when setup.cfg changed since the last set-up (an update may bring a new dependency), or
rem when the venv no longer runs (a moved folder breaks pobatch.exe with "Unable to create process").
fc /b setup.cfg "%STAMP%" >nul 2>nul
if errorlevel 1 goto :setup
"%POBATCH%" --version >nul 2>nul
if errorlevel 1 goto :setup
goto :ready

:setup
echo Setting up pobatch in .venv (first run, or after an update)...
set "VENV_OK="
if exist ".venv\Scripts\python.exe" ".venv\Scripts\python.exe" -c "" >nul 2>nul && set "VENV_OK=1"
if not defined VENV_OK %PY% -m venv --clear .venv
if not exist ".venv\Scripts\python.exe" goto :setup_failed
rem Users get pobatch alone; the test tools come with "run.bat test".
".venv\Scripts\python.exe" -m pip install -q --disable-pip-version-check -e .
if errorlevel 1 goto :setup_failed
copy /y setup.cfg "%STAMP%" >nul
if exist "%TEST_STAMP%" del "%TEST_STAMP%"

:ready
if /i "%~1"=="test" goto :test
if "%~1"=="" goto :interactive
rem A file dropped on run.bat arrives as its path (attributes without "d": a file, not a folder).
set "ATTR=%~a1"
if defined ATTR if /i not "%ATTR:~0,1%"=="d" goto :dropped
"%POBATCH%" %*
set "RC=%errorlevel%"
rem Exit 2 = the run could not start (bad input, a missing piece): say how to find every missing piece.
if "%RC%"=="2" for %%C in (run demo start) do if /i "%~1"=="%%C" echo The run could not start. "run.bat doctor" checks this PC and says what to do.
popd
exit /b %RC%

:dropped
"%POBATCH%" start "%~f1"
set "RC=%errorlevel%"
if "%RC%"=="2" call :offer_doctor
goto :end

:test
shift
fc /b setup.cfg "%TEST_STAMP%" >nul 2>nul
if errorlevel 1 goto :install_test_tools
".venv\Scripts\python.exe" -c "import pytest" >nul 2>nul
if not errorlevel 1 goto :run_tests
:install_test_tools
echo Installing the test tools into .venv...
".venv\Scripts\python.exe" -m pip install -q --disable-pip-version-check -e ".[test]"
if errorlevel 1 goto :setup_failed
copy /y setup.cfg "%TEST_STAMP%" >nul
:run_tests
".venv\Scripts\python.exe" -m pytest %1 %2 %3 %4 %5 %6 %7 %8 %9
set "RC=%errorlevel%"
popd
exit /b %RC%

:interactive
rem The file dialog needs PowerShell's full language; on a locked-down PC (Constrained Language Mode)
rem Add-Type fails: exit code 3 then, and pobatch asks for the path in this window instead.
set "ORDERS="
set "CHOSEN=%TEMP%\pobatch-chosen-%RANDOM%.txt"
powershell -NoProfile -STA -Command "try { Add-Type -AssemblyName System.Windows.Forms -ErrorAction Stop; $d = New-Object System.Windows.Forms.OpenFileDialog; $d.Title = 'Choose the file of PO numbers'; $d.Filter = 'PO lists (*.csv;*.xlsx;*.xlsm;*.txt)|*.csv;*.xlsx;*.xlsm;*.txt|All files (*.*)|*.*'; if ($d.ShowDialog() -eq 'OK') { $d.FileName; exit 0 } else { exit 1 } } catch { exit 3 }" > "%CHOSEN%" 2>nul
set "DIALOG_RC=%errorlevel%"
if "%DIALOG_RC%"=="0" for /f "usebackq delims=" %%F in ("%CHOSEN%") do set "ORDERS=%%F"
if exist "%CHOSEN%" del "%CHOSEN%"
if "%DIALOG_RC%"=="1" (
  echo No file chosen.
  set "RC=2"
  goto :end
)
if not defined ORDERS (
  echo The file dialog could not open on this PC.
  "%POBATCH%" start
) else (
  "%POBATCH%" start "%ORDERS%"
)
set "RC=%errorlevel%"
if "%RC%"=="2" call :offer_doctor
goto :end

:offer_doctor
rem The run could not start (exit 2): a person at the window may check the PC at once, every piece in one list.
echo.
choice /c YN /m "The run could not start. Check this PC with pobatch doctor now"
if errorlevel 2 exit /b 0
"%POBATCH%" doctor
exit /b 0

:setup_failed
echo Setting up pobatch failed. Python 3.10 or newer must be installed (https://www.python.org or the Microsoft Store).
set "RC=2"

:end
echo.
echo Press any key to close this window.
pause >nul
popd
exit /b %RC%
